"""What the training thread pays per ``log_metrics`` with ``logger="wandb"``.

Three ways to log the same record, measured in one run so they can be compared as
ratios: calling ``run.log`` of an offline W&B run directly (the baseline), expbox's
``FileLogger`` and expbox's ``WandbLogger`` (offline). Each round is a burst of
1,000 calls with the writer (and W&B's thread) drained before it, so a round
measures what the caller pays, not the writer's throughput. Run with::

    python -m pytest benchmarks/bench_wandb.py --benchmark-only \
        --benchmark-columns=median,mean,stddev,rounds

Each benchmark's ``extra_info`` holds the per-call median in microseconds and its
ratio to the direct ``run.log`` baseline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

wandb = pytest.importorskip("wandb")

from expbox.loggers import FileLogger  # noqa: E402
from expbox.paths import ExpPaths  # noqa: E402
from expbox.wandb_logger import WandbLogger  # noqa: E402

BURST = 1_000
ROUNDS = 20
PROJECT = "expbox-bench"

_per_call_us: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def offline_wandb(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An offline W&B with a private home: no network, no credentials."""
    base = tmp_path_factory.mktemp("wandb-bench")
    env = {
        "HOME": str(base),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(base / "wandb-dir"),
        "WANDB_CONFIG_DIR": str(base / "config"),
        "WANDB_CACHE_DIR": str(base / "cache"),
        "WANDB_DATA_DIR": str(base / "data"),
    }
    saved = dict(os.environ)
    os.environ.pop("WANDB_API_KEY", None)
    os.environ.update(env)
    yield
    wandb.teardown()
    os.environ.clear()
    os.environ.update(saved)


def _box(tmp_path: Path, exp_id: str) -> ExpPaths:
    paths = ExpPaths(tmp_path / exp_id)
    paths.root.mkdir()
    paths.make_dirs()
    return paths


def _record(i: int) -> dict[str, Any]:
    return {"loss": 1.0 / (i + 1), "acc": 0.5, "lr": 1e-3}


def _measure(
    benchmark: Any, name: str, burst: Callable[[], None], drain: Callable[[], Any]
) -> None:
    def setup() -> None:
        drain()  # pytest-benchmark reads a returned value as arguments

    benchmark.pedantic(burst, setup=setup, rounds=ROUNDS, iterations=1)
    per_call = benchmark.stats.stats.median / BURST * 1e6
    _per_call_us[name] = per_call
    benchmark.extra_info["per_call_us"] = round(per_call, 3)
    baseline = _per_call_us.get("wandb_run_log")
    if baseline:
        benchmark.extra_info["ratio_to_wandb_run_log"] = round(per_call / baseline, 4)


@pytest.mark.benchmark(group="wandb-per-call")
def test_wandb_run_log_directly(benchmark: Any, tmp_path: Path) -> None:
    """Baseline: ``run.log`` of an offline W&B run on the training thread."""
    run = wandb.init(project=PROJECT, dir=str(tmp_path), reinit="create_new")
    step = iter(range(10**9))

    def burst() -> None:
        for _ in range(BURST):
            i = next(step)
            run.log(_record(i), step=i)

    _measure(benchmark, "wandb_run_log", burst, lambda: None)
    run.finish()


@pytest.mark.benchmark(group="wandb-per-call")
def test_file_logger(benchmark: Any, tmp_path: Path) -> None:
    """expbox with ``logger="file"``: the caller only snapshots the record."""
    logger = FileLogger(_box(tmp_path, "file"), exp_id="file")

    def burst() -> None:
        log = logger.log_metrics
        for i in range(BURST):
            log(_record(i))

    _measure(benchmark, "file_logger", burst, logger.flush)
    logger.close()


@pytest.mark.benchmark(group="wandb-per-call")
def test_wandb_logger(benchmark: Any, tmp_path: Path) -> None:
    """expbox with ``logger="wandb"``: W&B is fed by the writer thread."""
    logger = WandbLogger(
        _box(tmp_path, "wandb"), exp_id="wandb", project=PROJECT, config={}
    )

    def burst() -> None:
        log = logger.log_metrics
        for i in range(BURST):
            log(_record(i))

    # Drain W&B's thread too: a backlog still being sent would compete for the
    # GIL with the next burst and measure W&B's speed instead of the caller's.
    _measure(benchmark, "wandb_logger", burst, logger.wait_for_wandb)
    logger.close()
    assert logger.meta_extra()["wandb"]["error"] is None
