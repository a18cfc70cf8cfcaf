"""Tests of the background writer: fsync, errors, resume, fork, exit, back-pressure."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import orjson
import pytest

import expbox.writer as writer_module
from expbox import envvars
from expbox.errors import WriterError
from expbox.loggers import FileLogger
from expbox.paths import ExpPaths
from expbox.reader import read_records


@pytest.fixture
def paths(tmp_path):
    box = ExpPaths(tmp_path / "box")
    box.root.mkdir()
    box.make_dirs()
    return box


def lines(paths):
    return [orjson.loads(line) for line in paths.metrics.read_bytes().splitlines()]


def run_child(code, timeout=120, **kwargs):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def test_one_named_daemon_thread_and_a_heartbeat_file(paths):
    """The writer runs as daemon thread expbox-writer:<id> and creates a heartbeat."""
    log = FileLogger(paths, exp_id="run-7")
    names = {t.name: t.daemon for t in threading.enumerate()}
    log.close()

    assert names["expbox-writer:run-7"] is True
    beat = json.loads(paths.heartbeat.read_text())
    assert beat["pid"] == os.getpid() and beat["host"]


def test_heartbeat_is_touched_from_the_writer_thread(paths):
    """The heartbeat's mtime moves forward while the writer runs."""
    log = FileLogger(paths, exp_id="t", heartbeat_interval=0.05)
    os.utime(paths.heartbeat, (1_000_000, 1_000_000))
    deadline = time.monotonic() + 10
    while paths.heartbeat.stat().st_mtime < 2_000_000 and time.monotonic() < deadline:
        time.sleep(0.02)
    log.close()

    assert paths.heartbeat.stat().st_mtime > 2_000_000


def test_fsync_interval_zero_fsyncs_every_batch(paths, monkeypatch):
    """With fsync_interval=0 every write of a batch is followed by an fsync."""
    events = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        writer_module, "_fsync", lambda fd: (events.append("fsync"), real_fsync(fd))
    )
    log = FileLogger(paths, exp_id="t", fsync_interval=0)
    real_write = log._writer.os_write
    log._writer.os_write = lambda fd, data: (
        events.append("write") or real_write(fd, data)
    )
    for i in range(20):
        log.log_metrics({"i": i})
        log.flush()
    log.close()

    assert events.count("write") == 20
    for i, event in enumerate(events):
        if event == "write":
            assert events[i + 1] == "fsync"


def test_the_environment_sets_the_fsync_interval(paths, monkeypatch):
    """EXPBOX_FSYNC_INTERVAL is read when fsync_interval is not given."""
    monkeypatch.setenv(envvars.FSYNC_INTERVAL, "0.25")
    log = FileLogger(paths, exp_id="t")
    log.close()

    assert log._writer.fsync_interval == 0.25


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.5])
def test_an_interval_that_would_stop_fsyncs_is_refused(paths, value):
    """A NaN, infinite or negative fsync_interval raises ValueError naming it."""
    with pytest.raises(ValueError, match="fsync_interval=") as caught:
        FileLogger(paths, exp_id="t", fsync_interval=value)

    assert "finite" in str(caught.value)
    assert not paths.metrics.exists()


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity", "-1"])
def test_an_environment_interval_that_would_stop_fsyncs_is_refused(
    paths, monkeypatch, text
):
    """EXPBOX_FSYNC_INTERVAL set to NaN, an infinity or less than 0 is refused."""
    monkeypatch.setenv(envvars.FSYNC_INTERVAL, text)

    with pytest.raises(ValueError, match=f"{envvars.FSYNC_INTERVAL}='{text}'"):
        FileLogger(paths, exp_id="t")
    assert not paths.metrics.exists()


def test_slow_fsync_stays_on_the_writer_thread_and_follows_the_interval(
    paths, monkeypatch
):
    """A slow fsync never runs on the caller's thread and runs about once a period."""
    calls = []
    real_fsync = os.fsync

    def slow_fsync(fd):
        calls.append(threading.current_thread().name)
        time.sleep(0.08)
        real_fsync(fd)

    monkeypatch.setattr(writer_module, "_fsync", slow_fsync)
    log = FileLogger(paths, exp_id="slow", fsync_interval=0.4)
    start = time.monotonic()
    while time.monotonic() - start < 2.0:
        log.log_metrics({"x": 1.0})
        time.sleep(0.001)
    periodic = len(calls)
    log.close()

    assert set(calls) == {"expbox-writer:slow"}
    # About 2.0 / 0.4 = 5 periodic fsyncs; generous bounds for a loaded machine.
    assert 2 <= periodic <= 8


def test_a_write_error_is_raised_at_the_next_call_and_records_are_kept(tmp_path):
    """EFBIG from RLIMIT_FSIZE surfaces as WriterError; a retry writes everything."""
    code = f"""
    import resource, signal
    from pathlib import Path
    from expbox.errors import WriterError
    from expbox.loggers import FileLogger
    from expbox.paths import ExpPaths

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    paths = ExpPaths(Path({str(tmp_path)!r}) / "box")
    paths.root.mkdir()
    paths.make_dirs()
    log = FileLogger(paths, exp_id="t")
    log.log_metrics(a=0.0)
    log.flush()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    limit = paths.metrics.stat().st_size + 100
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    for i in range(1, 200):
        log.log_metrics(a=float(i))
    try:
        log.flush()
    except WriterError as exc:
        print("ERR", exc.errno, exc.filename == str(paths.metrics))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    log.flush()
    print("CLOSE", log.close())
    steps = [int(l.split(b",")[0][8:]) for l in paths.metrics.read_bytes().splitlines()]
    print("STEPS", steps == list(range(200)))
    """
    result = run_child(code)

    assert result.returncode == 0, result.stderr
    assert "ERR 27 True" in result.stdout  # EFBIG
    assert "CLOSE 0" in result.stdout
    assert "STEPS True" in result.stdout


def test_a_replaced_metrics_file_is_reported_and_writing_goes_on(paths):
    """Another program replacing the file raises WriterError once; nothing is lost."""
    log = FileLogger(paths, exp_id="t")
    log.log_metrics(a=1.0)
    log.flush()
    other = paths.logs / "other"
    other.write_text("")
    os.replace(other, paths.metrics)
    log.log_metrics(a=2.0)

    with pytest.raises(WriterError, match="removed or replaced") as info:
        log.flush()
    log.log_metrics(a=3.0)
    log.close()

    assert info.value.filename == str(paths.metrics)
    assert [r["a"] for r in lines(paths)] == [2.0, 3.0]


def test_close_with_a_blocked_write_warns_and_returns_the_count(paths):
    """close(timeout) gives up on a blocked write, warns and says how many records."""
    gate = threading.Event()
    log = FileLogger(paths, exp_id="t")
    real_write = log._writer.os_write

    def blocked(fd, data):
        gate.wait(30)
        return real_write(fd, data)

    log._writer.os_write = blocked
    for i in range(100):
        log.log_metrics(i=i)
    with pytest.warns(RuntimeWarning, match="100 records may not be durable"):
        lost = log.close(timeout=0.3)
    gate.set()

    assert lost == 100
    assert log.close() == 100


def test_flush_with_a_timeout_returns_false_while_the_write_is_blocked(paths):
    """flush(timeout) returns False instead of hanging on a blocked write."""
    gate = threading.Event()
    log = FileLogger(paths, exp_id="t")
    real_write = log._writer.os_write
    log._writer.os_write = lambda fd, data: gate.wait(30) and real_write(fd, data)
    log.log_metrics(i=1)

    assert log.flush(timeout=0.2) is False
    gate.set()
    assert log.flush(timeout=30) is True
    log.close()
    assert len(lines(paths)) == 1


def test_resume_after_a_torn_line_starts_a_new_line(paths):
    """A metrics file ending in a torn line gets a newline before new records."""
    paths.metrics.write_bytes(b'{"step":0,"time":1.0,"a":1}\n{"step":1,"ti')
    log = FileLogger(paths, exp_id="t", start_step=1)
    log.log_metrics(a=2)
    log.close()

    raw = paths.metrics.read_bytes().splitlines()
    assert raw[1] == b'{"step":1,"ti'
    assert orjson.loads(raw[2])["a"] == 2
    with pytest.warns(RuntimeWarning, match="torn"):
        assert [r["step"] for r in read_records(paths.metrics)] == [0, 1]


def test_back_pressure_bounds_pending_records_and_loses_none(paths):
    """A slow writer makes callers wait: pending stays bounded, every line arrives."""
    log = FileLogger(paths, exp_id="t", max_pending=20_000)
    writer = log._writer
    real_write = writer.os_write

    def slow(fd, data):
        time.sleep(0.02)
        return real_write(fd, data)

    writer.os_write = slow
    peak = 0
    for i in range(1_000_000):
        log.log_metrics(x=i)
        if not i % 1000:
            peak = max(peak, len(writer.pending) + writer._inflight)
    log.close()

    assert peak <= 20_000 + writer_module.CHUNK
    data = paths.metrics.read_bytes()
    assert data.count(b"\n") == 1_000_000
    assert data.endswith(b'"x":999999}\n')


def test_records_are_written_at_interpreter_exit(tmp_path):
    """Records logged without flush or close are on disk after a normal exit."""
    code = f"""
    from pathlib import Path
    from expbox.loggers import FileLogger
    from expbox.paths import ExpPaths
    paths = ExpPaths(Path({str(tmp_path)!r}))
    log = FileLogger(paths, exp_id="t")
    for i in range(50_000):
        log.log_metrics(i=i)
    """
    result = run_child(code)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "logs" / "metrics.jsonl").read_bytes().count(b"\n") == 50_000


def _pool_task(n):
    # Runs in a forked worker holding the parent's inherited logger.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        INHERITED.log_metrics(child=n)
        INHERITED.flush()
        INHERITED.close()
    return os.getpid()


INHERITED = None


def test_forked_pool_workers_never_write_the_parents_records(paths):
    """Fork pool workers get an inert logger while the parent logs from 2 threads."""
    global INHERITED
    log = INHERITED = FileLogger(paths, exp_id="t")
    stop = threading.Event()
    counts = [0, 0]

    def work(slot):
        while not stop.is_set():
            log.log_metrics(slot=slot, n=counts[slot])
            counts[slot] += 1

    threads = [threading.Thread(target=work, args=(s,)) for s in (0, 1)]
    for thread in threads:
        thread.start()
    try:
        context = multiprocessing.get_context("fork")
        for _ in range(3):
            with context.Pool(4) as pool:
                pids = pool.map(_pool_task, range(16), chunksize=1)
                assert os.getpid() not in pids
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        INHERITED = None
    log.close()

    records = lines(paths)
    assert all("child" not in r for r in records)
    assert len(records) == sum(counts)
    for slot in (0, 1):
        assert [r["n"] for r in records if r["slot"] == slot] == list(
            range(counts[slot])
        )


def test_bare_forks_with_their_own_loggers_do_not_hang(paths, tmp_path):
    """Hundreds of forks, each logging to its own box, neither hang nor leak."""
    log = FileLogger(paths, exp_id="parent")
    stop = threading.Event()
    sent = [0]

    def work():
        while not stop.is_set():
            log.log_metrics(n=sent[0])
            sent[0] += 1

    thread = threading.Thread(target=work)
    thread.start()
    failures = 0
    try:
        for k in range(200):
            pid = os.fork()
            if pid == 0:  # child: must never raise out of here
                code = 1
                try:
                    log.log_metrics(child=k)  # inert: does nothing
                    child = ExpPaths(tmp_path / f"child{k}")
                    child.root.mkdir()
                    own = FileLogger(child, exp_id=f"c{k}")
                    own.log_metrics(k=k)
                    own.flush(timeout=20)
                    own.close(timeout=20)
                    code = 0
                finally:
                    os._exit(code)
            deadline = time.monotonic() + 30
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    failures += os.waitstatus_to_exitcode(status) != 0
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    pytest.fail(f"fork {k} hung")
                time.sleep(0.001)
    finally:
        stop.set()
        thread.join(timeout=60)
    log.close()

    assert failures == 0
    records = lines(paths)
    assert [r["n"] for r in records] == list(range(sent[0]))
    assert all(
        orjson.loads((tmp_path / f"child{k}/logs/metrics.jsonl").read_bytes())["k"] == k
        for k in range(200)
    )


def test_a_failing_write_raises_at_the_next_log_call_and_keeps_records(paths):
    """ENOSPC from the write reaches log_metrics; restored, every record lands."""
    log = FileLogger(paths, exp_id="t")
    writer = log._writer
    real_write = writer.os_write

    def full(fd, data):
        raise OSError(28, "No space left on device")

    writer.os_write = full
    for i in range(10):
        log.log_metrics(i=i)
    writer.wake()
    deadline = time.monotonic() + 30
    while writer.error is None and time.monotonic() < deadline:
        time.sleep(0.01)

    with pytest.raises(WriterError, match="No space left") as info:
        log.log_metrics(i=-1)
    writer.os_write = real_write
    log.log_metrics(i=10)
    log.close()

    assert info.value.errno == 28 and info.value.filename == str(paths.metrics)
    assert [r["i"] for r in lines(paths)] == list(range(11))
