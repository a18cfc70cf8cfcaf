"""What logging costs the training thread, against baselines measured alongside.

A record is four floats and a step, as a training loop logs them. Every comparison
interleaves expbox and its baseline round by round after ``gc.collect()`` and
compares medians, so a busy machine slows both sides alike.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
from collections import deque
from pathlib import Path

import orjson
import pytest

from expbox.loggers import FileLogger, NullLogger
from expbox.paths import ExpPaths

METRICS = {"loss": 0.25, "acc": 0.875, "lr": 0.001, "grad_norm": 1.5}


@pytest.fixture
def paths(tmp_path: Path) -> ExpPaths:
    box = ExpPaths(tmp_path / "box")
    box.root.mkdir()
    box.make_dirs()
    return box


class SnapshotFloor:
    """The least a logger can do: copy the record into a bounded deque."""

    def __init__(self) -> None:
        self.queue: deque = deque(maxlen=100_000)

    def log_metrics(self, metrics=None, step=None):
        self.queue.append((step, time.time(), dict(metrics)))


class Empty:
    def call(self, metrics=None, step=None, **kw):
        pass


def _burst(log_metrics, n: int, start: int) -> float:
    metrics = METRICS
    begin = time.perf_counter()
    for step in range(start, start + n):
        log_metrics(metrics, step=step)
    return time.perf_counter() - begin


def test_caller_cost_vs_snapshot_floor(benchmark, paths, report):
    """Bursts of 1,000 calls with the writer drained in between (not timed)."""
    logger = FileLogger(paths, exp_id="bench")
    floor = SnapshotFloor()
    ours: list[float] = []
    base: list[float] = []
    step = [0]

    def setup():
        logger.flush()
        gc.collect()
        base.append(_burst(floor.log_metrics, 1000, 0))
        floor.queue.clear()
        gc.collect()

    def run():
        ours.append(_burst(logger.log_metrics, 1000, step[0]))
        step[0] += 1000

    benchmark.pedantic(run, setup=setup, rounds=200, iterations=1, warmup_rounds=5)
    logger.close()

    ratio = statistics.median(ours) / statistics.median(base)
    report(
        "1. log_metrics call vs snapshot into a deque",
        ratio,
        2.0,
        3.0,
        f"expbox {statistics.median(ours) * 1e6:.0f} ns/call, floor "
        f"{statistics.median(base) * 1e6:.0f} ns/call (medians of 200 bursts)",
    )


def _inline_log(path: Path, n: int) -> None:
    """Lower bound: same encoding and writing, on the caller's thread, no checks."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    batch: list = []
    for step in range(n):
        batch.append({"step": step, "time": time.time(), **METRICS})
        if len(batch) == 8192:
            data = orjson.dumps(batch)[1:-1].replace(b'},{"step":', b'}\n{"step":')
            os.write(fd, data + b"\n")
            batch = []
    if batch:
        data = orjson.dumps(batch)[1:-1].replace(b'},{"step":', b'}\n{"step":')
        os.write(fd, data + b"\n")
    os.fsync(fd)
    os.close(fd)


def _naive_log(path: Path, n: int) -> None:
    """What many scripts do: encode, write and flush every record."""
    with open(path, "a") as file:
        for step in range(n):
            file.write(json.dumps({"step": step, "time": time.time(), **METRICS}))
            file.write("\n")
            file.flush()
        os.fsync(file.fileno())


def _expbox_log(paths: ExpPaths, n: int) -> None:
    logger = FileLogger(paths, exp_id="bench")
    log_metrics = logger.log_metrics
    metrics = METRICS
    for step in range(n):
        log_metrics(metrics, step=step)
    logger.flush()
    logger.close()


def test_million_records_then_flush_vs_inline_and_naive(
    benchmark, tmp_path, paths, report
):
    """One million records back to back and a flush, against two baselines."""
    n, naive_n = 1_000_000, 100_000
    inline: list[float] = []
    naive: list[float] = []
    ours: list[float] = []
    rounds = [0]

    def setup():
        rounds[0] += 1
        for target in (tmp_path / "inline.jsonl", tmp_path / "naive.jsonl"):
            target.unlink(missing_ok=True)
        paths.metrics.unlink(missing_ok=True)
        gc.collect()
        begin = time.perf_counter()
        _inline_log(tmp_path / "inline.jsonl", n)
        inline.append((time.perf_counter() - begin) / n)
        gc.collect()
        begin = time.perf_counter()
        _naive_log(tmp_path / "naive.jsonl", naive_n)
        naive.append((time.perf_counter() - begin) / naive_n)
        gc.collect()

    def run():
        begin = time.perf_counter()
        _expbox_log(paths, n)
        ours.append((time.perf_counter() - begin) / n)

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)

    assert paths.metrics.read_bytes().count(b"\n") == n
    per = statistics.median(ours)
    report(
        "2. 1M records + flush vs inline lower bound",
        per / statistics.median(inline),
        1.5,
        2.0,
        f"expbox {per * 1e9:.0f} ns/record, inline "
        f"{statistics.median(inline) * 1e9:.0f} ns/record (medians of 3 rounds)",
    )
    report(
        "2b. naive sync logger vs expbox (x faster)",
        statistics.median(naive) / per,
        None,
        None,
        f"naive json.dumps+write+flush {statistics.median(naive) * 1e9:.0f} "
        f"ns/record over {naive_n:,} records",
    )


def test_null_logger_vs_empty_method(benchmark, report):
    """NullLogger.log_metrics against an empty method with the same signature."""
    null = NullLogger()
    empty = Empty()
    ours: list[float] = []
    base: list[float] = []

    def setup():
        gc.collect()
        base.append(_burst(empty.call, 10_000, 0))

    def run():
        ours.append(_burst(null.log_metrics, 10_000, 0))

    benchmark.pedantic(run, setup=setup, rounds=100, iterations=1, warmup_rounds=3)

    ratio = statistics.median(ours) / statistics.median(base)
    report(
        "3. NullLogger.log_metrics vs empty method",
        ratio,
        1.2,
        1.2,
        f"null {statistics.median(ours) / 10_000 * 1e9:.0f} ns/call, empty "
        f"{statistics.median(base) / 10_000 * 1e9:.0f} ns/call",
    )


def _steps(log_metrics, n: int, work_s: float = 100e-6) -> list[float]:
    """Run n steps of busy work plus one log call; return each step's duration."""
    times = []
    clock = time.perf_counter
    metrics = dict(METRICS, tok_s=1234.5, mem=0.5)
    for step in range(n):
        begin = clock()
        while clock() - begin < work_s:
            pass
        if log_metrics is not None:
            log_metrics(metrics, step=step)
        times.append(clock() - begin)
    return times


def _p999(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.999))]


def test_tail_latency_of_a_training_step(benchmark, paths, report):
    """p99.9 of a ~100 us step that logs six floats, against the same step alone."""
    logger = FileLogger(paths, exp_id="bench")
    with_log: list[float] = []
    without: list[float] = []

    def setup():
        gc.collect()
        without.extend(_steps(None, 10_000))

    def run():
        with_log.extend(_steps(logger.log_metrics, 10_000))

    benchmark.pedantic(run, setup=setup, rounds=6, iterations=1)
    logger.close()

    ours, base = _p999(with_log), _p999(without)
    report(
        "4. p99.9 of a 100 us step, file logger vs none",
        ours / base,
        1.2,
        1.2,
        f"p99.9 {ours * 1e6:.0f} us vs {base * 1e6:.0f} us; max "
        f"{max(with_log) * 1e6:.0f} us vs {max(without) * 1e6:.0f} us; median "
        f"{statistics.median(with_log) * 1e6:.1f} vs "
        f"{statistics.median(without) * 1e6:.1f} us ({len(with_log):,} steps each, "
        f"default fsync interval)",
    )
