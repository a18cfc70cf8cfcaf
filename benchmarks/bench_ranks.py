"""What ``xb.init`` and ``log_metrics`` cost on a rank other than 0.

Such a rank gets a context that writes nothing; both calls are compared with an
empty method call measured in the same run, interleaved round by round.
"""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path

import expbox as xb

METRICS = {"loss": 0.25, "acc": 0.875, "lr": 0.001, "grad_norm": 1.5}


class Empty:
    def call(self, metrics=None, step=None, **kw):
        pass


def _time_calls(fn, n: int) -> float:
    begin = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - begin) / n


def _time_log(log_metrics, n: int) -> float:
    metrics = METRICS
    begin = time.perf_counter()
    for step in range(n):
        log_metrics(metrics, step=step)
    return (time.perf_counter() - begin) / n


def test_log_metrics_on_rank_one_vs_empty_call(benchmark, tmp_path: Path, report):
    """log_metrics on rank 1 against an empty method call with the same arguments."""
    ctx = xb.init(project="p", exp_id="r", results_root=tmp_path, rank=1)
    empty = Empty()
    ours: list[float] = []
    base: list[float] = []

    def setup():
        gc.collect()
        base.append(_time_log(empty.call, 10_000))

    def run():
        ours.append(_time_log(ctx.logger.log_metrics, 10_000))

    benchmark.pedantic(run, setup=setup, rounds=50, iterations=1, warmup_rounds=3)

    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []
    ratio = statistics.median(ours) / statistics.median(base)
    report(
        "rank 1: log_metrics vs empty method call",
        ratio,
        1.2,
        1.5,
        f"rank 1 {statistics.median(ours) * 1e9:.0f} ns/call, empty "
        f"{statistics.median(base) * 1e9:.0f} ns/call",
    )


def test_init_on_rank_one_vs_empty_call(benchmark, tmp_path: Path, report):
    """xb.init on rank 1 (no box, no thread) against an empty method call."""
    empty = Empty()
    ours: list[float] = []
    base: list[float] = []

    def init_rank_one():
        xb.init(project="p", exp_id="r", results_root=tmp_path, rank=1)

    def setup():
        gc.collect()
        base.append(_time_calls(empty.call, 1_000))

    def run():
        ours.append(_time_calls(init_rank_one, 1_000))

    benchmark.pedantic(run, setup=setup, rounds=20, iterations=1, warmup_rounds=2)

    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []
    ratio = statistics.median(ours) / statistics.median(base)
    report(
        "rank 1: xb.init vs empty method call",
        ratio,
        None,
        None,
        f"rank 1 init {statistics.median(ours) * 1e6:.1f} us/call, empty "
        f"{statistics.median(base) * 1e9:.0f} ns/call; once per run, no I/O",
    )
