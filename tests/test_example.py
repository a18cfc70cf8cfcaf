"""The main job, examples/train_digits.py, run end to end in a child interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="the example needs scikit-learn")
pytest.importorskip("matplotlib", reason="the example draws a loss curve")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_digits.py"


def test_train_digits_leaves_a_complete_box(tmp_path):
    """Two epochs on the real digits data leave meta, config, metrics and a figure."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "2", "--results-root", "res"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr

    (box,) = (tmp_path / "res").iterdir()
    assert f"box: res/{box.name}" in out.stdout
    meta = json.loads((box / "meta.json").read_text())
    assert meta["status"] == "finished"
    assert meta["final_note"].startswith("test accuracy")
    assert (box / "artifacts" / "config.yaml").exists()
    png = (box / "figures" / "loss_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000

    lines = [
        json.loads(x) for x in (box / "logs" / "metrics.jsonl").read_text().splitlines()
    ]
    train = [r for r in lines if "train/loss" in r]
    epochs = [r for r in lines if "test/acc" in r]
    # 1,347 training images in batches of 32: 43 steps an epoch.
    assert len(train) == 2 * 43
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert epochs[-1]["test/acc"] > 0.8
    assert [r["step"] for r in train] == list(range(86))
    assert [r["step"] for r in epochs] == [43, 86]
