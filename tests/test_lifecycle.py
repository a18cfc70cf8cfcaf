"""How a box ends: clean exits, exceptions, SIGTERM, SIGKILL, os._exit, fork, resume.

Every case runs in a child interpreter and is ended for real; the test then reads
the box back from disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import expbox as xb

PRELUDE = """
import os, sys, time, signal, threading
import expbox as xb
ROOT = {root!r}
"""


def write_script(root: Path, body: str) -> str:
    """A script file, not ``-c``: the spawn start method must re-import it."""
    # A directory of its own: the script's directory goes first on sys.path.
    fd, name = tempfile.mkstemp(suffix=".py", dir=tempfile.mkdtemp())
    with os.fdopen(fd, "w") as f:
        f.write(PRELUDE.format(root=str(root)) + textwrap.dedent(body))
    return name


def run_child(root: Path, body: str, timeout: float = 60, **kwargs):
    return subprocess.run(
        [sys.executable, write_script(root, body)],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def start_child(root: Path, body: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, write_script(root, body)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def meta_of(box: Path) -> dict:
    return json.loads((box / "meta.json").read_text())


def lines_of(box: Path) -> list[bytes]:
    path = box / "logs" / "metrics.jsonl"
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def whole_records(box: Path) -> list[dict]:
    """Every line but a torn last one must parse; return the parsed records."""
    lines = lines_of(box)
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            assert i == len(lines) - 1 and not line.endswith(b"\n"), line
    return records


def wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
        if not line and proc.poll() is not None:
            raise AssertionError(f"child ended early: {proc.stderr.read()}")
    raise AssertionError(f"no {prefix!r} from the child")


def test_clean_exit_without_save_or_flush_keeps_every_record(tmp_path):
    """Ten records then a normal exit, no save, no flush: ten lines and finished."""
    out = run_child(
        tmp_path,
        """
        ctx = xb.init(project="p", exp_id="b", results_root=ROOT, fsync_interval=60)
        for i in range(10):
            ctx.logger.log_metrics({"x": i})
        """,
    )

    assert out.returncode == 0, out.stderr
    box = tmp_path / "b"
    assert [r["x"] for r in whole_records(box)] == list(range(10))
    assert meta_of(box)["status"] == "finished"


def test_sys_exit_zero_is_finished(tmp_path):
    """sys.exit(0) finalizes the box as finished."""
    out = run_child(
        tmp_path,
        """
        ctx = xb.init(project="p", exp_id="b", results_root=ROOT)
        ctx.logger.log_metrics({"x": 1})
        sys.exit(0)
        """,
    )

    assert out.returncode == 0, out.stderr
    assert meta_of(tmp_path / "b")["status"] == "finished"


def test_uncaught_exception_is_failed_with_type_and_message(tmp_path):
    """An uncaught exception leaves failed, its type and message, and all records."""
    out = run_child(
        tmp_path,
        """
        ctx = xb.init(project="p", exp_id="b", results_root=ROOT)
        for i in range(10):
            ctx.logger.log_metrics({"x": i})
        raise ValueError("loss is nan")
        """,
    )

    assert out.returncode == 1
    assert "ValueError: loss is nan" in out.stderr
    meta = meta_of(tmp_path / "b")
    assert meta["status"] == "failed"
    assert meta["error"] == {"type": "ValueError", "message": "loss is nan"}
    assert len(whole_records(tmp_path / "b")) == 10


def test_keyboard_interrupt_is_terminated(tmp_path):
    """An uncaught KeyboardInterrupt reads as terminated, with its type."""
    out = run_child(
        tmp_path,
        """
        ctx = xb.init(project="p", exp_id="b", results_root=ROOT)
        for i in range(10):
            ctx.logger.log_metrics({"x": i})
        raise KeyboardInterrupt
        """,
    )

    assert out.returncode != 0
    meta = meta_of(tmp_path / "b")
    assert meta["status"] == "terminated"
    assert meta["error"]["type"] == "KeyboardInterrupt"
    assert len(whole_records(tmp_path / "b")) == 10


LOG_FOREVER = """
ctx = xb.init(project="p", exp_id="b", results_root=ROOT, fsync_interval=30)
i = 0
while True:
    ctx.logger.log_metrics({"x": float(i)})
    i += 1
    if i % 2000 == 0:
        print("logged", i, flush=True)
"""


def test_sigterm_flushes_finalizes_terminated_and_dies_of_sigterm(tmp_path):
    """SIGTERM mid-logging: every record before it on disk, terminated, status 143."""
    proc = start_child(tmp_path, LOG_FOREVER)
    try:
        count = int(wait_for_line(proc, "logged").split()[1])
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()

    assert proc.returncode == -signal.SIGTERM
    box = tmp_path / "b"
    records = whole_records(box)
    assert len(records) >= count
    assert [r["step"] for r in records] == list(range(len(records)))
    meta = meta_of(box)
    assert meta["status"] == "terminated"
    assert meta["error"]["type"] == "SIGTERM"


def test_sigterm_runs_a_handler_installed_before_expbox(tmp_path):
    """A SIGTERM handler installed first still runs after expbox finalized the box."""
    marker = tmp_path / "handler-ran"
    body = (
        textwrap.dedent(
            f"""
            def handler(signum, frame):
                open({str(marker)!r}, "w").write("yes")
                sys.exit(7)
            signal.signal(signal.SIGTERM, handler)
            """
        )
        + LOG_FOREVER
    )
    proc = start_child(tmp_path, body)
    try:
        wait_for_line(proc, "logged")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()

    assert proc.returncode == 7
    assert marker.read_text() == "yes"
    assert meta_of(tmp_path / "b")["status"] == "terminated"


def test_process_group_sigterm_twice_with_a_worker_child(tmp_path):
    """SIGTERM to the whole group, twice 50 ms apart, with a worker: one whole meta."""
    body = (
        textwrap.dedent(
            """
            import multiprocessing as mp

            def worker():
                while True:
                    time.sleep(0.1)

            p = mp.get_context("fork").Process(target=worker, daemon=True)
            p.start()
            """
        )
        + LOG_FOREVER
    )
    proc = start_child(tmp_path, body, start_new_session=True)
    try:
        count = int(wait_for_line(proc, "logged").split()[1])
        os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    assert proc.returncode == -signal.SIGTERM
    meta = meta_of(tmp_path / "b")
    assert meta["status"] == "terminated"
    records = whole_records(tmp_path / "b")
    assert len(records) >= count
    assert [r["step"] for r in records] == list(range(len(records)))


def test_sigkill_at_random_moments_keeps_meta_whole_and_flushed_records(tmp_path):
    """SIGKILL at random times: meta parses, lines whole but the last, flushes kept."""
    rng = random.Random(1234)
    for attempt in range(12):
        root = tmp_path / f"r{attempt}"
        proc = start_child(
            root,
            """
            ctx = xb.init(project="p", exp_id="b", results_root=ROOT, fsync_interval=5)
            i = 0
            while True:
                for _ in range(200):
                    ctx.logger.log_metrics({"x": float(i), "y": "v" * 50})
                    i += 1
                ctx.logger.flush()
                print("flushed", i, flush=True)
                if i % 1000 == 0:
                    xb.save(ctx, status="running")
            """,
        )
        flushed = 0
        try:
            deadline = time.monotonic() + rng.uniform(0.3, 1.5)
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if line.startswith("flushed"):
                    flushed = int(line.split()[1])
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            proc.kill()

        box = root / "b"
        assert meta_of(box)["exp_id"] == "b"
        records = whole_records(box)
        assert len(records) >= flushed
        assert [r["step"] for r in records] == list(range(len(records)))


def test_os_exit_after_flush_keeps_flushed_records_and_running_status(tmp_path):
    """flush, more records, os._exit: flushed records there, meta still running."""
    out = run_child(
        tmp_path,
        """
        ctx = xb.init(project="p", exp_id="b", results_root=ROOT)
        for i in range(100):
            ctx.logger.log_metrics({"x": i})
        ctx.logger.flush()
        for i in range(100):
            ctx.logger.log_metrics({"x": i})
        os._exit(0)
        """,
    )

    assert out.returncode == 0
    box = tmp_path / "b"
    assert len(whole_records(box)) >= 100
    meta = meta_of(box)
    assert meta["status"] == "running"
    assert meta["system"]["pid"] != os.getpid()


def test_no_stale_lock_after_sigkill_blocks_load_or_resume(tmp_path):
    """After SIGKILL the box loads, and resumes for writing, without a lock error."""
    proc = start_child(tmp_path, LOG_FOREVER)
    try:
        wait_for_line(proc, "logged")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()

    ctx = xb.load("b", results_root=tmp_path)
    assert ctx.meta.status == "running"
    again = xb.load("b", results_root=tmp_path, logger="file")
    again.close()
    assert meta_of(tmp_path / "b")["status"] == "finished"


def test_resume_after_a_torn_line_starts_on_its_own_line(tmp_path):
    """A torn last line: the next record starts a new line; old records come first."""
    ctx = xb.init(project="p", exp_id="b", results_root=tmp_path)
    for i in range(5):
        ctx.logger.log_metrics({"x": i})
    ctx.close()
    with open(ctx.paths.metrics, "ab") as f:
        f.write(b'{"step": 5, "time": 1.0, "x"')

    again = xb.init(project="p", exp_id="b", resume="allow", results_root=tmp_path)
    again.logger.log_metrics({"x": 99})
    again.close()

    with pytest.warns(RuntimeWarning, match="torn"):
        records = again.metrics()
    assert [r["x"] for r in records] == [0, 1, 2, 3, 4, 99]
    assert records[-1]["step"] == 5


def test_long_fsync_interval_and_live_executor_at_exit(tmp_path):
    """A user executor left alive and a long fsync interval: all records at exit."""
    out = run_child(
        tmp_path,
        """
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(2)
        pool.submit(time.sleep, 0.2)
        ctx = xb.init(project="p", exp_id="b", results_root=ROOT, fsync_interval=3600)
        for i in range(5000):
            ctx.logger.log_metrics({"x": i})
        """,
    )

    assert out.returncode == 0, out.stderr
    assert len(whole_records(tmp_path / "b")) == 5000
    assert meta_of(tmp_path / "b")["status"] == "finished"


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_run_inside_a_multiprocessing_child_is_finalized(tmp_path, method):
    """A box made in a multiprocessing child that returns without save is finished."""
    out = run_child(
        tmp_path,
        f"""
        import multiprocessing as mp

        def job():
            ctx = xb.init(project="p", exp_id="child", results_root=ROOT)
            for i in range(50):
                ctx.logger.log_metrics({{"x": i}})

        if __name__ == "__main__":
            p = mp.get_context({method!r}).Process(target=job)
            p.start()
            p.join(60)
            print("exitcode", p.exitcode)
        """,
    )

    assert "exitcode 0" in out.stdout, out.stderr
    box = tmp_path / "child"
    assert len(whole_records(box)) == 50
    assert meta_of(box)["status"] == "finished"


def test_fork_pool_children_neither_duplicate_nor_hang(tmp_path):
    """A fork pool while the parent logs: no duplicated lines, children's boxes work."""
    out = run_child(
        tmp_path,
        """
        import multiprocessing as mp

        def child_job(n):
            ctx = xb.init(project="p", exp_id=f"c{n}", results_root=ROOT)
            ctx.logger.log_metrics({"n": n})
            xb.save(ctx)
            return n

        ctx = xb.init(project="p", exp_id="parent", results_root=ROOT)
        stop = False
        def log_loop():
            i = 0
            while not stop:
                ctx.logger.log_metrics({"i": i})
                i += 1
        t = threading.Thread(target=log_loop)
        t.start()
        with mp.get_context("fork").Pool(4) as pool:
            results = pool.map(child_job, range(16))
        stop = True
        t.join()
        xb.save(ctx)
        print("ok", sum(results))
        """,
        timeout=120,
    )

    assert "ok 120" in out.stdout, out.stderr
    parent = whole_records(tmp_path / "parent")
    assert [r["i"] for r in parent] == list(range(len(parent)))
    for n in range(16):
        box = tmp_path / f"c{n}"
        assert [r["n"] for r in whole_records(box)] == [n]
        assert meta_of(box)["status"] == "finished"
    assert meta_of(tmp_path / "parent")["status"] == "finished"


def test_records_are_readable_by_another_process_while_the_run_goes_on(tmp_path):
    """Records logged more than two fsync intervals ago can be read by others."""
    proc = start_child(
        tmp_path,
        """
        ctx = xb.init(project="p", exp_id="b", results_root=ROOT, fsync_interval=0.2)
        for i in range(100):
            ctx.logger.log_metrics({"x": i})
        print("logged", flush=True)
        time.sleep(60)
        """,
    )
    try:
        wait_for_line(proc, "logged")
        time.sleep(0.6)
        records = whole_records(tmp_path / "b")
        status = meta_of(tmp_path / "b")["status"]
    finally:
        proc.kill()
        proc.wait(timeout=30)

    assert [r["x"] for r in records] == list(range(100))
    assert status == "running"


def test_exit_with_a_blocked_write_ends_within_the_timeout_and_warns(tmp_path):
    """A write that blocks for minutes: exit still ends, warning of lost records."""
    out = run_child(
        tmp_path,
        """
        ctx = xb.init(project="p", exp_id="b", results_root=ROOT)
        ctx.logger.log_metrics({"x": 0})
        ctx.logger.flush()
        ctx.logger._writer.os_write = lambda fd, data: time.sleep(600)
        for i in range(50):
            ctx.logger.log_metrics({"x": i})
        """,
        env={**os.environ, "EXPBOX_EXIT_TIMEOUT": "1"},
        timeout=60,
    )

    assert out.returncode == 0, out.stderr
    assert "50 records may not be durable" in out.stderr
    meta = meta_of(tmp_path / "b")
    assert meta["status"] == "finished"
    assert meta["extra"]["records_not_durable"] == 50


def test_five_hundred_forks_while_two_threads_log(tmp_path):
    """Two threads log while the main thread forks 500 times: no hang, no stray line."""
    out = run_child(
        tmp_path,
        """
        ctx = xb.init(project="p", exp_id="b", results_root=ROOT)
        stop = threading.Event()
        def work(name):
            i = 0
            while not stop.is_set():
                ctx.logger.log_metrics({"thread": name, "i": i})
                i += 1
        threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for _ in range(500):
            pid = os.fork()
            if pid == 0:
                ctx.logger.log_metrics({"thread": "child", "i": -1})
                ctx.logger.flush()
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            assert status == 0, status
        stop.set()
        for t in threads:
            t.join()
        xb.save(ctx)
        print("forked 500")
        """,
        timeout=300,
    )

    assert "forked 500" in out.stdout, out.stderr
    records = whole_records(tmp_path / "b")
    assert records and all(r["thread"] in ("a", "b") for r in records)
    for name in ("a", "b"):
        mine = [r["i"] for r in records if r["thread"] == name]
        assert mine == list(range(len(mine)))


@pytest.mark.parametrize(("call", "code"), [("sys.exit(3)", 3), ("sys.exit('bad')", 1)])
def test_nonzero_sys_exit_is_failed_with_the_status(tmp_path, call, code):
    """sys.exit with a non-zero status or a message leaves failed, not finished."""
    out = run_child(
        tmp_path,
        f"""
        ctx = xb.init(project="p", exp_id="b", results_root=ROOT)
        ctx.logger.log_metrics({{"x": 1}})
        {call}
        """,
    )

    assert out.returncode == code
    meta = meta_of(tmp_path / "b")
    assert meta["status"] == "failed"
    assert meta["error"]["type"] == "SystemExit"
    assert f"exit status {code}" in meta["error"]["message"]
    assert len(whole_records(tmp_path / "b")) == 1


def test_many_processes_resuming_one_id_get_one_writer(tmp_path):
    """Processes racing on one exp_id with resume='allow': one writes, none crash."""
    body = """
    import expbox
    go = os.path.join(os.path.dirname(ROOT), "go")
    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        ctx = xb.init(project="p", exp_id="shared", resume="allow", results_root=ROOT)
    except expbox.BoxLockedError:
        print("locked")
    else:
        ctx.logger.log_metrics({"pid": os.getpid()})
        time.sleep(1.0)
        ctx.close()
        print("wrote")
    """
    root = tmp_path / "results"
    procs = [start_child(root, body) for _ in range(8)]
    time.sleep(0.5)
    (tmp_path / "go").write_text("")
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outcomes.append(out.strip())

    assert "wrote" in outcomes
    assert set(outcomes) <= {"wrote", "locked"}
    assert [p.name for p in root.iterdir()] == ["shared"]
    assert meta_of(root / "shared")["status"] == "finished"


def test_sigterm_handler_arrives_with_a_later_init_on_the_main_thread(tmp_path):
    """A first init on a worker thread, then one on the main thread: SIGTERM works."""
    proc = start_child(
        tmp_path,
        """
        t = threading.Thread(
            target=lambda: xb.init(project="p", exp_id="w", results_root=ROOT)
        )
        t.start()
        t.join()
        ctx = xb.init(project="p", exp_id="b", results_root=ROOT)
        ctx.logger.log_metrics({"x": 1})
        print("logged", flush=True)
        time.sleep(60)
        """,
    )
    try:
        wait_for_line(proc, "logged")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()

    assert proc.returncode == -signal.SIGTERM
    assert meta_of(tmp_path / "b")["status"] == "terminated"
    assert meta_of(tmp_path / "w")["status"] == "terminated"
