"""Several ranks of one job call the real API at once, as separate processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

RANK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, threading, time
    from pathlib import Path

    go = Path(sys.argv[1])
    while not go.exists():          # released together
        time.sleep(0.001)
    import expbox as xb

    rank = int(os.environ["RANK"])
    root = sys.argv[2] if rank == 0 else sys.argv[3]
    logger = sys.argv[4]
    ctx = xb.init(project="ddp", exp_id=sys.argv[5], results_root=root, logger=logger)
    for step in range(20):
        ctx.logger.log_metrics({"loss": 1.0 / (step + 1), "rank": rank}, step=step)
    if logger == "wandb":
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3])
        ctx.logger.log_figure(fig, "curve")
        artifact = Path(sys.argv[6]) / f"weights-{rank}.txt"
        artifact.write_text("w")
        ctx.logger.log_artifact(artifact, name="weights.txt")
    ctx.meta.final_note = f"rank {rank} was here"
    xb.save(ctx)
    print(json.dumps({
        "rank": rank,
        "exp_id": ctx.exp_id,
        "is_main": ctx.is_main,
        "threads": sorted(t.name for t in threading.enumerate()),
        "wandb_imported": "wandb" in sys.modules,
    }))
    """
)


def launch_ranks(tmp_path: Path, n: int, logger: str, exp_id: str, env: dict) -> list:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    go = tmp_path / "go"
    good_root = tmp_path / "results"
    # A path below a regular file: any attempt to create something there fails.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    bad_root = blocker / "results"
    procs = []
    for rank in range(n):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(script),
                    str(go),
                    str(good_root),
                    str(bad_root),
                    logger,
                    exp_id,
                    str(tmp_path),
                ],
                env={**env, "RANK": str(rank), "WORLD_SIZE": str(n)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    time.sleep(0.5)
    go.write_text("")
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_eight_ranks_released_together_make_one_box(tmp_path):
    """Eight ranks at once, ranks 1..7 with an unwritable root: one box, no failure."""
    env = {k: v for k, v in os.environ.items() if k != "EXPBOX_EXP_ID"}

    results = launch_ranks(tmp_path, 8, "file", "ddp-run", env)

    assert [p.name for p in (tmp_path / "results").iterdir()] == ["ddp-run"]
    box = tmp_path / "results" / "ddp-run"
    lines = [
        json.loads(x) for x in (box / "logs" / "metrics.jsonl").read_text().split()
    ]
    assert [r["rank"] for r in lines] == [0] * 20
    meta = json.loads((box / "meta.json").read_text())
    assert meta["final_note"] == "rank 0 was here"
    assert meta["distributed"]["world_size"] == 8
    for result in results:
        assert result["exp_id"] == "ddp-run"
        assert result["is_main"] == (result["rank"] == 0)
        if result["rank"] != 0:
            assert result["threads"] == ["MainThread"]


def test_four_ranks_with_wandb_make_one_box_and_one_run(tmp_path):
    """Four ranks with logger='wandb': one box, figure, artifact and W&B run."""
    pytest.importorskip("wandb", reason="the W&B backend needs the wandb package")
    pytest.importorskip("matplotlib", reason="the ranks log a figure")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WANDB_") and k != "EXPBOX_EXP_ID"
    }
    env.update(
        HOME=str(home),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_CONFIG_DIR=str(home / "config"),
        WANDB_CACHE_DIR=str(home / "cache"),
        WANDB_DATA_DIR=str(home / "data"),
    )

    results = launch_ranks(tmp_path, 4, "wandb", "wb-run", env)

    box = tmp_path / "results" / "wb-run"
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["wb-run"]
    assert [p.name for p in (box / "figures").iterdir()] == ["curve.png"]
    artifacts = sorted(p.name for p in (box / "artifacts").iterdir())
    assert artifacts == ["config.yaml", "weights.txt"]
    runs = list((box / "logs" / "wandb").glob("**/offline-run-*"))
    assert len(runs) == 1
    meta = json.loads((box / "meta.json").read_text())
    assert meta["extra"]["wandb"]["run_id"]
    for result in results:
        if result["rank"] != 0:
            assert result["wandb_imported"] is False
            assert result["threads"] == ["MainThread"]
