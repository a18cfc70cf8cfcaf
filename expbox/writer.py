"""The background thread that appends records to ``logs/metrics.jsonl``.

The caller's thread appends a finished record dict to ``MetricsWriter.pending`` (a
deque: appending is atomic, no lock). The writer thread pops chunks from the left,
encodes each with one orjson call, writes it with one ``write`` and fsyncs on a
schedule.

Threads signal each other only with plain locks used as binary semaphores (acquire
with a timeout, release that never blocks). A SIGTERM handler that closes the logger
runs on the main thread between two bytecodes of whatever it interrupted; no lock
that the interrupted code may hold is ever needed by the writer or by ``close``.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import os
import threading
import time
import warnings
import weakref
from collections import deque
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Optional

from . import envvars
from .errors import WriterError
from .metrics_file import (
    file_identity,
    open_for_append,
    read_float_env,
    read_fsync_interval,
    write_heartbeat,
)
from .paths import DEFAULT_HEARTBEAT_INTERVAL
from .records import RESERVED, encode_records

log = logging.getLogger("expbox")

#: Records waiting for the writer before callers wait: about 0.5 KiB each for a
#: record of a few floats, so about 32 MiB at most.
DEFAULT_MAX_PENDING = 65_536
#: Records encoded and written with one ``write`` call. One chunk per wake-up:
#: every time the writer takes the GIL back it can delay the training thread.
CHUNK = 8192
#: Pending records at which the caller wakes the writer before its next poll.
WAKE_AT = 8192
#: How long the writer sleeps when nobody wakes it. Each wake-up takes the GIL
#: from the training thread a few times; rare wake-ups keep that out of p99.9.
POLL_INTERVAL = 1.0
#: How long the writer waits before retrying a failed write or fsync.
RETRY_INTERVAL = 1.0
#: How often a caller waiting for room, or for a flush, looks again.
_WAIT_STEP = 0.002
DEFAULT_EXIT_TIMEOUT = 10.0

_ONLY_DICTS = frozenset({dict})
_NEVER = object()

# Looked up at call time so a test can count or slow fsync on real files.
_fsync = os.fsync


class _Control:
    """An item of the queue that is not a record: flush, figure or stop."""

    __slots__ = ("kind", "payload", "done")

    def __init__(self, kind: str, payload: Any = None) -> None:
        self.kind = kind
        self.payload = payload
        self.done = threading.Lock()
        self.done.acquire()

    def wait(self, timeout: float) -> bool:
        return self.done.acquire(timeout=timeout)


class _State:
    """A value of ``MetricsWriter.error`` that makes every call do nothing."""

    def __init__(self, name: str) -> None:
        self.name = name


INERT = _State("inherited from the parent process")
CLOSED = _State("closed")


class MetricsWriter:
    """One background thread appending records to one metrics file.

    Args:
        path: The metrics file, opened in append mode (created if missing).
        exp_id: Names the thread ``expbox-writer:<exp_id>``.
        heartbeat_path: A file created now and touched every ``heartbeat_interval``.
        fsync_interval: Seconds between fsyncs; 0 fsyncs after every write; None
            reads ``EXPBOX_FSYNC_INTERVAL`` (default 2.0).
        max_pending: Records held in memory before callers wait (or drop).
        on_full: ``"block"`` (wait for the writer) or ``"drop"`` (count and drop).
        sinks: Objects with ``on_records``, ``on_figure`` and ``close``, called on
            the writer thread after each local write.

    Raises:
        OSError: the metrics file cannot be opened.
    """

    def __init__(
        self,
        path: Path,
        *,
        exp_id: str,
        heartbeat_path: Optional[Path] = None,
        fsync_interval: Optional[float] = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        on_full: str = "block",
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        sinks: Any = (),
    ) -> None:
        if on_full not in ("block", "drop"):
            raise ValueError(f"on_full={on_full!r}; choose 'block' or 'drop'")
        if max_pending < 1:
            raise ValueError(f"max_pending={max_pending!r} must be at least 1")
        self.path = Path(path)
        self.heartbeat_path = heartbeat_path
        self.fsync_interval = read_fsync_interval(fsync_interval)
        self.heartbeat_interval = float(heartbeat_interval)
        self.max_pending = max_pending
        self.drop_when_full = on_full == "drop"
        self.pending: deque[Any] = deque()
        self.wake_at = min(WAKE_AT, max_pending)
        self.error: Any = None
        self.dropped = 0
        self.sink_errors: list[dict[str, str]] = []
        #: Test hook: replace to make the file write block or fail.
        self.os_write: Callable[[int, Any], int] = os.write

        self._wake = threading.Lock()
        self._sinks = list(sinks)
        self._inflight = 0
        self._carry: Optional[tuple[bytes, list[dict[str, Any]]]] = None
        self._dirty = False
        self._last_fsync = time.monotonic()
        self._last_heartbeat = 0.0
        self._stop_requested = False
        self._stopped = False
        self._closed = False
        self._close_result = 0
        self._warned_state = False

        self._fd = open_for_append(self.path)
        self._identity = file_identity(os.fstat(self._fd))
        self._write_heartbeat()
        self._thread: Optional[threading.Thread] = threading.Thread(
            target=self._run, name=f"expbox-writer:{exp_id}", daemon=True
        )
        _live.add(self)
        self._thread.start()

    # ----------------------------------------------------------- caller's side

    def check_error(self) -> bool:
        """Raise a kept writer error once; True when calls should do nothing."""
        error = self.error
        if error is None:
            return False
        if isinstance(error, _State):
            if not self._warned_state:
                self._warned_state = True
                warnings.warn(
                    f"expbox: this logger is {error.name}; the call does nothing",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return True
        self.error = None
        raise error

    def wake(self) -> None:
        """Wake the writer thread now rather than at its next poll."""
        with contextlib.suppress(RuntimeError):  # already awake
            self._wake.release()

    def backlog(self) -> None:
        """Wake the writer, and wait (or drop) while too many records are pending."""
        pending = self.pending
        self.wake()
        if len(pending) < self.max_pending:
            self.wake_at = self.max_pending
            return
        if self.drop_when_full:
            with contextlib.suppress(IndexError):
                while len(pending) > self.max_pending:
                    item = pending.pop()
                    if type(item) is not dict:
                        pending.append(item)
                        break
                    self.dropped += 1
            return
        while len(pending) >= self.max_pending and self._thread_alive():
            if self.error is not None:
                self.check_error()
                return
            time.sleep(_WAIT_STEP)
            self.wake()

    def enqueue_control(self, kind: str, payload: Any = None) -> _Control:
        """Queue a flush, figure or stop item behind the records logged so far."""
        item = _Control(kind, payload)
        self.pending.append(item)
        self.wake()
        return item

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every record queued before this call is written and fsynced.

        Returns:
            False if ``timeout`` passed first, True otherwise.

        Raises:
            WriterError: the writer failed to write or fsync.
        """
        if self.check_error() or self._closed:
            return True
        marker = self.enqueue_control("flush")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not marker.wait(0.05):
            if self.error is not None:
                self.check_error()
            if not self._thread_alive():
                raise WriterError(
                    errno.EIO, "the metrics writer thread has stopped", str(self.path)
                )
            if deadline is not None and time.monotonic() >= deadline:
                return False
        self.check_error()
        return True

    def close(self, timeout: Optional[float] = None) -> int:
        """Write everything, stop the thread and close sinks; safe to call twice.

        Returns:
            The number of records that may not be durable: 0 normally, more when the
            writer did not finish within ``timeout`` (a warning says so).

        Raises:
            WriterError: the last records could not be written.
        """
        if self._closed:
            return self._close_result
        self._closed = True
        self._stop_requested = True
        self.enqueue_control("stop")
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                count = self.unwritten()
                self._close_result = count
                self.error = CLOSED
                warnings.warn(
                    f"expbox: the metrics writer did not finish within {timeout}s; "
                    f"{count} records may not be durable in {self.path}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return count
        _live.discard(self)
        error, self.error = self.error, CLOSED
        count = self.unwritten()
        self._close_result = count
        if not count and isinstance(error, WriterError):
            raise error  # a failure since recovered from, not yet reported
        if count:
            raise WriterError(
                getattr(error, "errno", None) or errno.EIO,
                f"{count} records could not be written "
                f"({getattr(error, 'strerror', None) or error})",
                str(self.path),
            ) from error
        return 0

    def unwritten(self) -> int:
        """Records logged but not yet written: pending, in flight or kept."""
        pending = _count_records(list(self.pending))
        carry = len(self._carry[1]) if self._carry is not None else 0
        return pending + self._inflight + carry

    def _thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while not self._stopped:
            self._wake.acquire(timeout=self._sleep_time())
            try:
                self._cycle()
                self._tick()
            except Exception as exc:  # a bug must surface, not kill the thread
                self._fail(exc, "write")
            if self._stop_requested and not self._stopped and self.error is not None:
                self._stopped = True  # a last attempt failed: give up, close says so
        self._shutdown()

    def _sleep_time(self) -> float:
        if self.error is not None or self._carry is not None:
            return RETRY_INTERVAL
        # Records must be written before they can be fsynced on schedule.
        wait = min(POLL_INTERVAL, self.fsync_interval or POLL_INTERVAL)
        now = time.monotonic()
        if self._dirty:
            wait = min(wait, self._last_fsync + self.fsync_interval - now)
        if self.heartbeat_path is not None:
            wait = min(wait, self._last_heartbeat + self.heartbeat_interval - now)
        return max(wait, 0.0)

    def _cycle(self) -> None:
        if self._carry is not None and not self._write_carry():
            return
        pending = self.pending
        if not pending or not self._check_file():
            return
        self.wake_at = min(WAKE_AT, self.max_pending)
        popleft = pending.popleft
        # Only what was queued at wake-up: records logged meanwhile wait for the
        # next wake-up rather than costing the training thread a GIL switch each.
        left = len(pending)
        while left > 0 and not self._stopped:
            count = min(left, CHUNK)
            left -= count
            # iter(callable, sentinel) pops from C, without a Python frame per item.
            chunk = list(islice(iter(popleft, _NEVER), count))
            if _ONLY_DICTS.issuperset(map(type, chunk)):
                self._inflight = count
                if not self._write_bytes(encode_records(chunk), chunk):
                    self._inflight = 0
                    return
                self._inflight = 0
            elif not self._write_mixed(chunk):
                return

    def _write_mixed(self, chunk: list[Any]) -> bool:
        """Write records and run controls in order; put back what is left on error."""
        self._inflight = _count_records(chunk)
        pos, end = 0, len(chunk)
        while pos < end:
            item = chunk[pos]
            if type(item) is dict:
                stop = pos + 1
                while stop < end and type(chunk[stop]) is dict:
                    stop += 1
                records = chunk[pos:stop]
                done = self._write_bytes(encode_records(records), records)
                self._inflight -= len(records)
            else:
                stop = pos + 1
                done = self._control(item)
                if not done:
                    stop = pos  # keep the control for the retry
            if not done:
                self.pending.extendleft(reversed(chunk[stop:]))
                self._inflight = 0
                return False
            pos = stop
        return True

    def _write_bytes(self, data: Any, records: list[dict[str, Any]]) -> bool:
        view = memoryview(data)
        try:
            while view:
                view = view[self.os_write(self._fd, view) :]
        except OSError as exc:
            self._carry = (bytes(view), records)
            self._fail(exc, "write to")
            return False
        self._dirty = True
        if self.fsync_interval == 0:
            self._sync()
        if self._sinks:
            rows = [
                (
                    r["step"],
                    r["time"],
                    {k: v for k, v in r.items() if k not in RESERVED},
                )
                for r in records
            ]
            self._call_sinks("on_records", rows)
        return True

    def _write_carry(self) -> bool:
        assert self._carry is not None
        data, records = self._carry
        self._carry = None
        return self._write_bytes(data, records)

    def _control(self, item: _Control) -> bool:
        if item.kind == "figure":
            self._call_sinks("on_figure", *item.payload)
        elif self._dirty and not self._sync():  # flush or stop
            return False
        if item.kind == "stop":
            self._stopped = True
        item.done.release()
        return True

    def _tick(self) -> None:
        now = time.monotonic()
        if self._dirty and now - self._last_fsync >= self.fsync_interval:
            self._sync()
        if (
            self.heartbeat_path is not None
            and now - self._last_heartbeat >= self.heartbeat_interval
        ):
            self._last_heartbeat = now
            try:
                os.utime(self.heartbeat_path)
            except OSError:
                log.debug("expbox: cannot touch %s", self.heartbeat_path, exc_info=True)

    def _sync(self) -> bool:
        try:
            _fsync(self._fd)
        except OSError as exc:
            self._fail(exc, "fsync")
            return False
        self._dirty = False
        self._last_fsync = time.monotonic()
        return True

    def _check_file(self) -> bool:
        """Reopen the metrics file if another program removed or replaced it."""
        try:
            same = file_identity(os.stat(self.path)) == self._identity
        except FileNotFoundError:
            same = False
        if same:
            return True
        self._fail(
            OSError(errno.ENOENT, "the file was removed or replaced"), "append to"
        )
        try:
            fd = open_for_append(self.path)
        except OSError:
            return False
        os.close(self._fd)
        self._fd = fd
        self._identity = file_identity(os.fstat(fd))
        return True

    def _fail(self, exc: BaseException, action: str) -> None:
        log.debug("expbox: cannot %s %s", action, self.path, exc_info=exc)
        error = WriterError(
            getattr(exc, "errno", None) or errno.EIO,
            f"expbox could not {action} the metrics file "
            f"({getattr(exc, 'strerror', None) or exc}); records not written are "
            f"kept and retried",
            str(self.path),
        )
        error.__cause__ = exc
        if not isinstance(self.error, _State):
            self.error = error

    def _call_sinks(self, method: str, *args: Any) -> None:
        for sink in list(self._sinks):
            try:
                getattr(sink, method)(*args)
            except Exception as exc:
                self._drop_sink(sink, exc)

    def _drop_sink(self, sink: Any, exc: Exception) -> None:
        name = str(getattr(sink, "name", type(sink).__name__))
        self._sinks.remove(sink)
        self.sink_errors.append({"sink": name, "error": f"{type(exc).__name__}: {exc}"})
        warnings.warn(
            f"expbox: the {name} sink failed ({type(exc).__name__}: {exc}) and is no "
            f"longer called; the local metrics file stays complete",
            RuntimeWarning,
            stacklevel=2,
        )

    def _shutdown(self) -> None:
        if self._dirty:
            self._sync()
        self._call_sinks("close")
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def _write_heartbeat(self) -> None:
        if self.heartbeat_path is None:
            return
        write_heartbeat(self.heartbeat_path)
        self._last_heartbeat = time.monotonic()

    def _become_inert(self) -> None:
        """In a forked child: drop the parent's records, thread, locks and file."""
        self.error = INERT
        self.pending = deque()
        self._wake = threading.Lock()
        self._carry = None
        self._inflight = 0
        self._sinks = []
        self._thread = None
        self._closed = True
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _count_records(items: list[Any]) -> int:
    return sum(type(item) is dict for item in items)


_live: weakref.WeakSet[MetricsWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_live):
        writer._become_inert()
    _live.clear()


def _close_at_exit() -> None:
    """Close writers nobody closed, so records logged before exit are durable."""
    timeout = read_float_env(envvars.EXIT_TIMEOUT, DEFAULT_EXIT_TIMEOUT)
    for writer in list(_live):
        try:
            writer.close(timeout)
        except Exception:
            log.debug("expbox: closing a writer at exit failed", exc_info=True)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_at_exit)
