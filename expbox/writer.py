"""The background thread that appends records to ``logs/metrics.jsonl``.

The caller's thread only appends a finished record dict to ``MetricsWriter.pending``
under ``MetricsWriter.lock`` (see ``loggers.FileLogger.log_metrics``). The writer
thread swaps that list out, encodes it with orjson in chunks, writes each chunk with
one ``write`` and fsyncs on a schedule. The lock is never held across I/O.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import logging
import math
import os
import socket
import threading
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable, Optional

import orjson

from . import envvars
from .errors import WriterError
from .records import spell_nonfinite

log = logging.getLogger("expbox")

DEFAULT_FSYNC_INTERVAL = 2.0
#: Records waiting for the writer before callers wait (about 0.4 KiB each for a
#: record of a few floats, so about 30 MiB at most, plus one chunk being encoded).
DEFAULT_MAX_PENDING = 65_536
#: Records encoded and written with one ``write`` call.
CHUNK = 4096
#: Pending records at which the caller wakes the writer before its next poll.
WAKE_AT = 8192
#: How long the writer sleeps when nobody wakes it.
POLL_INTERVAL = 0.2
#: How long the writer waits before retrying after a failed write or fsync.
RETRY_INTERVAL = 1.0
DEFAULT_EXIT_TIMEOUT = 10.0

# Looked up at call time so a test can count or slow fsync on real files.
_fsync = os.fsync
_dumps = orjson.dumps


class _Control:
    """An item in the queue that is not a record: flush, figure or stop."""

    __slots__ = ("kind", "done", "payload")

    def __init__(self, kind: str, payload: Any = None) -> None:
        self.kind = kind
        self.payload = payload
        self.done = threading.Event()


class _State:
    """A value of ``MetricsWriter.error`` that is not an exception."""

    def __init__(self, name: str) -> None:
        self.name = name


INERT = _State("inert after fork")
CLOSED = _State("closed")


def encode_records(records: list[dict[str, Any]]) -> bytes:
    """Return ``records`` as JSON lines, NaN and infinities spelled as strings.

    Every record starts with its ``"step"`` key and holds no nested object, so in
    the encoded list ``},{"step":`` occurs only between records (a quote inside a
    string is escaped). One ``dumps`` of the whole chunk is much cheaper than one
    per record, whose many short-lived buffers stress the allocator.
    """
    try:
        data = _dumps(records)
    except (TypeError, orjson.JSONEncodeError):
        return b"".join(_encode_slow(r) for r in records)
    # orjson writes non-finite floats as null; only then do records need a look.
    if b"null" in data:
        fixed = [spell_nonfinite(r) if _has_nonfinite(r) else r for r in records]
        data = _dumps(fixed)
    return data[1:-1].replace(_BETWEEN, _BETWEEN_LINES) + b"\n"


_BETWEEN = b'},{"step":'
_BETWEEN_LINES = b'}\n{"step":'


def _has_nonfinite(record: dict[str, Any]) -> bool:
    return any(
        type(v) is float and (v != v or v in (math.inf, -math.inf))
        for v in record.values()
    )


def _encode_slow(record: dict[str, Any]) -> bytes:
    record = spell_nonfinite(record)
    try:
        return _dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except (TypeError, orjson.JSONEncodeError):
        # Strings with lone surrogates: orjson refuses them, json escapes them.
        return json.dumps(record, allow_nan=False).encode() + b"\n"


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
        heartbeat_interval: float = 10.0,
        sinks: Any = (),
    ) -> None:
        if on_full not in ("block", "drop"):
            raise ValueError(f"on_full={on_full!r}; choose 'block' or 'drop'")
        if max_pending < 1:
            raise ValueError(f"max_pending={max_pending!r} must be at least 1")
        self.path = Path(path)
        self.heartbeat_path = heartbeat_path
        self.fsync_interval = _fsync_interval(fsync_interval)
        self.heartbeat_interval = float(heartbeat_interval)
        self.max_pending = max_pending
        self.drop_when_full = on_full == "drop"
        # Shared with the caller's thread; see the module docstring.
        self.lock = threading.Lock()
        self.not_full = threading.Condition(self.lock)
        self.wake = threading.Event()
        self.pending: list[Any] = []
        self.controls = 0
        self.limit = max_pending
        self.wake_at = min(WAKE_AT, max_pending)
        self.waiters = 0
        self.error: Any = None
        self.inert = False
        self.dropped = 0
        self.sink_errors: list[dict[str, str]] = []
        #: Test hook: replace to make the file write block or fail.
        self.os_write: Callable[[int, Any], int] = os.write

        self._sinks = list(sinks)
        self._inflight = 0
        self._carry: Optional[tuple[memoryview, list[dict[str, Any]]]] = None
        self._dirty = False
        self._last_fsync = time.monotonic()
        self._last_heartbeat = 0.0
        self._stop_requested = False
        self._stopped = False
        self._closed = False
        self._close_result = 0
        self._warned_state = False

        self._fd = _open_for_append(self.path)
        self._identity = _file_identity(os.fstat(self._fd))
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

    def backlog(self) -> None:
        """Wake the writer, and wait (or drop) when too many records are pending."""
        with self.lock:
            pending = self.pending
            if len(pending) < self.limit:
                self.wake_at = self.limit
                self.wake.set()
                return
            self.wake.set()
            if self.drop_when_full:
                if pending and type(pending[-1]) is dict:
                    pending.pop()
                    self.dropped += 1
                return
            self.waiters += 1
            try:
                while len(self.pending) >= self.limit and self.error is None:
                    if self._thread is None or not self._thread.is_alive():
                        break
                    self.not_full.wait(0.05)
            finally:
                self.waiters -= 1
        self.check_error()

    def enqueue_control(self, kind: str, payload: Any = None) -> _Control:
        """Queue a flush, figure or stop item behind the records logged so far."""
        item = _Control(kind, payload)
        with self.lock:
            self.pending.append(item)
            self.controls += 1
        self.wake.set()
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
        while not marker.done.wait(0.05):
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
        if self.inert or self._closed:
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
        if count or isinstance(error, WriterError):
            raise WriterError(
                getattr(error, "errno", None) or errno.EIO,
                f"{count} records could not be written "
                f"({getattr(error, 'strerror', None) or error})",
                str(self.path),
            ) from error
        return 0

    def unwritten(self) -> int:
        """Records logged but not yet written (pending, in flight or kept)."""
        pending = sum(type(item) is dict for item in list(self.pending))
        carry = len(self._carry[1]) if self._carry is not None else 0
        return pending + self._inflight + carry

    def _thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while not self._stopped:
            self.wake.wait(self._sleep_time())
            self.wake.clear()
            try:
                self._cycle()
                self._tick()
            except Exception as exc:  # a bug must surface, not kill the thread
                log.debug("expbox writer cycle failed", exc_info=True)
                self._fail(exc, "write")
            if self._stop_requested and (self.error is not None or not self.pending):
                self._stopped = True
        self._shutdown()

    def _sleep_time(self) -> float:
        if self.error is not None or self._carry is not None:
            return RETRY_INTERVAL
        wait = POLL_INTERVAL
        now = time.monotonic()
        if self._dirty:
            wait = min(wait, self._last_fsync + self.fsync_interval - now)
        if self.heartbeat_path is not None:
            wait = min(wait, self._last_heartbeat + self.heartbeat_interval - now)
        return max(wait, 0.0)

    def _cycle(self) -> None:
        if self._carry is not None and not self._write_carry():
            return
        with self.lock:
            batch = self.pending
            if not batch:
                return
            self.pending = []
            controls, self.controls = self.controls, 0
            self.limit = max(self.max_pending - len(batch), 0)
            self.wake_at = min(WAKE_AT, self.limit)
            self._inflight = len(batch)
        if not self._check_file():
            self._put_back(batch, 0)
            return
        pos, end = 0, len(batch)
        while pos < end:
            item = batch[pos]
            if type(item) is not dict:
                if not self._control(item):
                    break
                pos += 1
                self._release(1)
                continue
            stop = min(pos + CHUNK, end)
            if controls:
                for i in range(pos, stop):
                    if type(batch[i]) is not dict:
                        stop = i
                        break
            chunk = batch[pos:stop]
            written = self._write_bytes(encode_records(chunk), chunk)
            pos = stop
            self._release(len(chunk))
            if not written:
                break
        if pos < end:
            self._put_back(batch, pos)

    def _release(self, count: int) -> None:
        with self.lock:
            self._inflight -= count
            self.limit += count
            self.wake_at = min(WAKE_AT, self.limit)
            if self.waiters:
                self.not_full.notify_all()

    def _put_back(self, batch: list[Any], pos: int) -> None:
        rest = batch[pos:]
        with self.lock:
            self.pending[:0] = rest
            self.controls += sum(type(item) is not dict for item in rest)
            self._inflight = 0
            self.limit = self.max_pending
            self.wake_at = min(WAKE_AT, self.limit)

    def _write_bytes(self, data: bytes, records: list[dict[str, Any]]) -> bool:
        view = memoryview(data)
        try:
            while view:
                view = view[self.os_write(self._fd, view) :]
        except OSError as exc:
            self._carry = (view, records)
            self._fail(exc, "write to")
            return False
        self._after_write(records)
        return True

    def _write_carry(self) -> bool:
        assert self._carry is not None
        view, records = self._carry
        self._carry = None
        return self._write_bytes(bytes(view), records)

    def _after_write(self, records: list[dict[str, Any]]) -> None:
        self._dirty = True
        if self.fsync_interval == 0:
            self._sync()
        if self._sinks:
            rows = [
                (r["step"], r["time"], {k: v for k, v in r.items() if k not in _RES})
                for r in records
            ]
            self._call_sinks("on_records", rows)

    def _control(self, item: _Control) -> bool:
        if item.kind == "figure":
            self._call_sinks("on_figure", *item.payload)
        elif item.kind == "flush" or item.kind == "stop":
            if self._dirty and not self._sync():
                return False
            if item.kind == "stop":
                self._stopped = True
        item.done.set()
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
            same = _file_identity(os.stat(self.path)) == self._identity
        except FileNotFoundError:
            same = False
        if same:
            return True
        self._fail(
            OSError(errno.ENOENT, "the metrics file was removed or replaced"),
            "append to",
        )
        try:
            fd = _open_for_append(self.path)
        except OSError:
            return False
        os.close(self._fd)
        self._fd = fd
        self._identity = _file_identity(os.fstat(fd))
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
            f"longer called; the local metrics file is complete",
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
        text = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        Path(self.heartbeat_path).write_text(text + "\n")
        self._last_heartbeat = time.monotonic()

    # ------------------------------------------------------------------- fork

    def _become_inert(self) -> None:
        """In a forked child: forget the parent's records, locks, thread and file."""
        self.inert = True
        self.lock = threading.Lock()
        self.not_full = threading.Condition(self.lock)
        self.wake = threading.Event()
        self.pending = []
        self.controls = 0
        self._carry = None
        self._inflight = 0
        self._sinks = []
        self._thread = None
        self._closed = True
        self.error = INERT
        with contextlib.suppress(OSError):
            os.close(self._fd)


_RES = ("step", "time")
_live: weakref.WeakSet[MetricsWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_live):
        writer._become_inert()
    _live.clear()


def _close_at_exit() -> None:
    timeout = _float_env(envvars.EXIT_TIMEOUT, DEFAULT_EXIT_TIMEOUT)
    for writer in list(_live):
        try:
            writer.close(timeout)
        except Exception:
            log.debug("expbox: closing a writer at exit failed", exc_info=True)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_at_exit)


def _open_for_append(path: Path) -> int:
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    try:
        # A line torn by SIGKILL must not swallow the first new record.
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _file_identity(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _fsync_interval(value: Optional[float]) -> float:
    if value is None:
        value = _float_env(envvars.FSYNC_INTERVAL, DEFAULT_FSYNC_INTERVAL)
    value = float(value)
    if value < 0:
        raise ValueError(f"fsync_interval={value!r} must be 0 or more seconds")
    return value


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
