"""What reading boxes back costs: ``expbox ls`` over many boxes, last values of a
long run.

Two comparisons, each measured in one run so they can be read as ratios:

- ``expbox ls`` over 10,000 boxes (meta.json, a short metrics file, some running
  on another host with a heartbeat), against listing the same directories and
  reading each ``meta.json`` with nothing else (the floor any listing pays).
- The last values of a 10-million-line ``metrics.jsonl``: reading its tail, against
  a full streaming read that decodes every line (what a listing without tail
  reads would pay per box).

Run with::

    python -m pytest benchmarks/bench_listing.py --benchmark-only \
        --benchmark-columns=median,mean,stddev,rounds

Each benchmark's ``extra_info`` holds its ratio to its baseline, and the ratios
join the table printed at the end of the session. Building the
fixtures takes about a minute and 700 MB of temporary disk.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest

from expbox.boxes import list_boxes
from expbox.cli import main
from expbox.tail import read_tail

N_BOXES = 10_000
N_LINES = 10_000_000

_medians: dict[str, float] = {}


@pytest.fixture(scope="session")
def many_boxes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10,000 boxes written directly on disk, as the file logger leaves them."""
    root = tmp_path_factory.mktemp("many-boxes")
    for i in range(N_BOXES):
        box = root / f"run-{i:05d}"
        (box / "logs").mkdir(parents=True)
        (box / "artifacts").mkdir()
        running = i % 10 == 0
        meta = {
            "schema": 1,
            "exp_id": box.name,
            "project": f"project-{i % 7}",
            "title": f"sweep point {i}",
            "purpose": "benchmark",
            "status": "running" if running else "finished",
            "created_at": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00+00:00",
            "finished_at": None if running else "2026-02-01T00:00:00+00:00",
            "system": {"host": "node-elsewhere", "pid": 1000 + i, "python": "3.11"},
            "heartbeat_interval": 10.0,
            "extra": {},
        }
        (box / "meta.json").write_text(json.dumps(meta, indent=2))
        lines = (
            f'{{"step":{s},"time":{1.7e9 + s},"loss":{1 / (s + 1)},"acc":{s / 50}}}\n'
            for s in range(50)
        )
        (box / "logs" / "metrics.jsonl").write_text("".join(lines))
        if running:
            (box / "logs" / "heartbeat").touch()
    return root


@pytest.fixture(scope="session")
def long_metrics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One metrics file of 10 million records, a validation key every 1,000."""
    path = tmp_path_factory.mktemp("long-run") / "metrics.jsonl"
    chunk = 100_000
    with open(path, "w") as f:
        for start in range(0, N_LINES, chunk):
            f.write(
                "".join(
                    f'{{"step":{s},"time":{1.7e9 + s / 100:.3f},'
                    f'"loss":{1 / (s + 1):.6g}'
                    + (f',"val":{s}' if s % 1000 == 0 else "")
                    + "}\n"
                    for s in range(start, start + chunk)
                )
            )
    return path


def _record(
    benchmark: Any,
    report: Callable[..., None],
    name: str,
    baseline: str | None = None,
    goal: float | None = None,
    accept: float | None = None,
) -> None:
    """Keep the median; against a baseline, add the ratio to the summary table."""
    median = benchmark.stats.stats.median
    _medians[name] = median
    benchmark.extra_info["median_ms"] = round(median * 1e3, 3)
    if baseline is None or baseline not in _medians:
        return
    ratio = median / _medians[baseline]
    benchmark.extra_info[f"ratio_to_{baseline}"] = round(ratio, 5)
    detail = (
        f"{name} {median * 1e3:.1f} ms vs {baseline} "
        f"{_medians[baseline] * 1e3:.1f} ms (medians)"
    )
    report(f"listing: {name} / {baseline}", ratio, goal, accept, detail)


def _read_every_meta(root: Path) -> int:
    count = 0
    with os.scandir(root) as entries:
        for entry in entries:
            meta = orjson.loads(Path(entry.path, "meta.json").read_bytes())
            count += meta["status"] == "running"
    return count


def test_meta_only_baseline(
    benchmark: Any, report: Callable[..., None], many_boxes: Path
) -> None:
    """Baseline: scan the root and decode every meta.json, nothing else."""
    running = benchmark.pedantic(
        _read_every_meta, args=(many_boxes,), rounds=5, warmup_rounds=1
    )

    assert running == N_BOXES // 10
    _record(benchmark, report, "meta_only")


def test_list_boxes(
    benchmark: Any, report: Callable[..., None], many_boxes: Path
) -> None:
    """list_boxes: meta.json, liveness by heartbeat, sorting; no metrics read."""
    found = benchmark.pedantic(
        list_boxes, args=(many_boxes,), rounds=5, warmup_rounds=1
    )

    assert len(found) == N_BOXES
    _record(benchmark, report, "list_boxes", "meta_only", goal=2.0, accept=3.0)


def test_expbox_ls(
    benchmark: Any, report: Callable[..., None], many_boxes: Path
) -> None:
    """The whole ``expbox ls`` command, last values from each tail, text output."""

    def run() -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["ls", "--results-root", str(many_boxes)]) == 0
        return out.getvalue()

    text = benchmark.pedantic(run, rounds=5, warmup_rounds=1)

    assert text.count("\n") == N_BOXES + 1 and "loss=0.02" in text
    # Two opens per box (meta.json, then the metrics tail) plus formatting, against
    # one open in the baseline.
    _record(benchmark, report, "expbox_ls", "meta_only", goal=5.0, accept=8.0)


def _full_read_last_values(path: Path) -> dict[str, Any]:
    last: dict[str, Any] = {}
    with open(path, "rb") as f:
        for line in f:
            last.update(orjson.loads(line))
    return last


def test_full_read_baseline(
    benchmark: Any, report: Callable[..., None], long_metrics: Path
) -> None:
    """Baseline: decode all 10 million lines to find the last values."""
    last = benchmark.pedantic(
        _full_read_last_values, args=(long_metrics,), rounds=1, iterations=1
    )

    assert last["step"] == N_LINES - 1 and last["val"] == N_LINES - 1000
    _record(benchmark, report, "full_read")


def test_tail_read(
    benchmark: Any, report: Callable[..., None], long_metrics: Path
) -> None:
    """read_tail: last step and the last loss and val, read from the end."""
    tail = benchmark.pedantic(
        read_tail, args=(long_metrics, ["loss", "val"]), rounds=50, warmup_rounds=2
    )

    assert tail.last_step == N_LINES - 1 and tail.values["val"] == N_LINES - 1000
    _record(benchmark, report, "tail_read", "full_read", goal=0.001, accept=0.01)
