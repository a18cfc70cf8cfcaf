"""The logger front ends: ``FileLogger`` writes a box, ``NullLogger`` does nothing.

Both offer the calls of :class:`Logger`. ``FileLogger.log_metrics`` runs on the
training thread, so it only snapshots and checks the record and hands it to the
background writer (:mod:`expbox.writer`); encoding and file I/O happen there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from collections.abc import Mapping
from itertools import count
from pathlib import Path
from typing import (
    Any,
    BinaryIO,
    Callable,
    Optional,
    Protocol,
    Union,
    runtime_checkable,
)

from .atomic import _create_temp
from .names import check_name
from .paths import CONFIG_SNAPSHOT, DEFAULT_HEARTBEAT_INTERVAL, ExpPaths
from .records import (
    FAST_TYPES,
    INT_MAX,
    INT_MIN,
    RESERVED,
    check_step,
    is_utf8,
    snapshot_record,
)
from .writer import DEFAULT_MAX_PENDING, MetricsWriter

__all__ = ["FileLogger", "Logger", "MetricsSink", "NullLogger"]

_time = time.time
#: Metric names remembered as valid; past this many, new names take the slow path.
_MAX_NAMES = 10_000
#: Bytes read and written at a time when copying an artifact.
_COPY_BUFFER = 1 << 20


@runtime_checkable
class MetricsSink(Protocol):
    """Receives what the writer thread wrote, on that thread, after the local write.

    ``on_records`` gets ``(step, time, metrics)`` tuples, ``metrics`` without the
    ``step`` and ``time`` keys and with NaN and infinities as floats. A sink that
    raises is warned about once, listed in ``meta_extra()["sink_errors"]`` and not
    called again; the local file is never affected.
    """

    name: str

    def on_records(self, records: list[tuple[int, float, dict[str, Any]]]) -> None:
        """Take a batch of records, in the order they were logged."""

    def on_figure(self, path: Path, name: str, step: Optional[int]) -> None:
        """Take a figure saved as ``path``, in order with the records."""

    def close(self) -> None:
        """Release resources; called once, on the writer thread."""


@runtime_checkable
class Logger(Protocol):
    """The calls every logger backend offers."""

    def log_metrics(
        self,
        metrics: Optional[Mapping[str, Any]] = None,
        step: Optional[int] = None,
        **metrics_kw: Any,
    ) -> None:
        """Log one record."""

    def log_figure(self, fig: Any, name: str, step: Optional[int] = None) -> Any:
        """Save a figure as ``figures/<name>.png``."""

    def log_artifact(self, path: Union[str, os.PathLike[str]], name: Any = None) -> Any:
        """Copy a file into ``artifacts/``."""

    def flush(self, timeout: Optional[float] = None) -> Any:
        """Make everything logged so far durable."""

    def close(self, timeout: Optional[float] = None) -> int:
        """Flush and stop; safe to call twice."""

    @property
    def last_step(self) -> Optional[int]:
        """The step of the last record logged, or None."""

    def meta_extra(self) -> dict[str, Any]:
        """What the logger wants recorded in ``meta.extra``."""


class NullLogger:
    """A logger that does nothing, at the cost of an empty call.

    Used for ``logger="none"`` and on ranks other than 0: it creates no file and no
    thread, and every call is safe any number of times.
    """

    last_step: Optional[int] = None

    def log_metrics(self, metrics=None, step=None, **metrics_kw):  # type: ignore[no-untyped-def]
        pass

    def log_figure(self, fig: Any, name: str, step: Optional[int] = None) -> None:
        return None

    def log_artifact(self, path: Any, name: Any = None) -> None:
        return None

    def flush(self, timeout: Optional[float] = None) -> bool:
        return True

    def close(self, timeout: Optional[float] = None) -> int:
        return 0

    def meta_extra(self) -> dict[str, Any]:
        return {}


class FileLogger:
    """Log records to ``logs/metrics.jsonl`` of a box from a background thread.

    Args:
        paths: The box layout; ``logs/`` is created if missing.
        exp_id: Names the writer thread ``expbox-writer:<exp_id>``.
        fsync_interval: Seconds between fsyncs; 0 fsyncs every batch; None reads
            ``EXPBOX_FSYNC_INTERVAL`` (default 2.0).
        max_pending: Records held in memory before ``log_metrics`` waits for the
            writer (default 65,536, at most about 32 MiB for small records).
        start_step: The step of the first record logged without ``step=``.
        heartbeat_interval: Seconds between touches of ``logs/heartbeat``.
        sinks: :class:`MetricsSink` objects fed from the writer thread.
        on_full: ``"block"`` (default: wait, lose nothing) or ``"drop"`` (drop the
            newest record and count it in ``meta_extra()["dropped_records"]``).
    """

    def __init__(
        self,
        paths: ExpPaths,
        *,
        exp_id: str,
        fsync_interval: Optional[float] = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        start_step: int = 0,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        sinks: Any = (),
        on_full: str = "block",
    ) -> None:
        self.paths = paths
        paths.logs.mkdir(parents=True, exist_ok=True)
        self._steps = count(check_step(start_step))
        self._last_step: Optional[int] = None
        # The last automatic step; when it differs from the last step, a step was
        # given since and automatic steps go on from there.
        self._auto_last: Optional[int] = None
        self._names: set[str] = set()
        self._writer = MetricsWriter(
            paths.metrics,
            exp_id=exp_id,
            heartbeat_path=paths.heartbeat,
            fsync_interval=fsync_interval,
            max_pending=max_pending,
            on_full=on_full,
            heartbeat_interval=heartbeat_interval,
            sinks=sinks,
        )

    def log_metrics(
        self,
        metrics: Optional[Mapping[str, Any]] = None,
        step: Optional[int] = None,
        **metrics_kw: Any,
    ) -> None:
        """Snapshot one record and hand it to the writer; returns at once.

        ``log_metrics({"loss": 0.1}, step=3)`` and ``log_metrics(step=3, loss=0.1)``
        are the same. Without ``step`` the record gets one more than the last step.
        The values are copied now: changing the dict, array or tensor later does not
        change what is logged.

        Raises:
            TypeError: a name is not a string, a value cannot be logged, or a name
                or string holds a lone surrogate (the message names the key);
                nothing of the record is logged.
            ValueError: a metric is named ``step`` or ``time``.
            WriterError: the writer failed since the last call; this record is not
                logged, the earlier ones are kept and retried.
        """
        writer = self._writer
        if writer.error is not None and writer.check_error():
            return
        if metrics is None:
            metrics = metrics_kw
        elif metrics_kw:
            metrics = {**metrics, **metrics_kw}
        try:
            record = {"step": step, "time": _time(), **metrics}
        except TypeError:
            snapshot_record(metrics, 0.0)  # raises the explanation
            raise
        # Names of accepted records are strings, not reserved and encodable:
        # testing against them is cheaper than testing each name. type() is tested
        # in a loop, not with map(), because the interpreter specializes type(x) in
        # bytecode. Text is checked for lone surrogates only when not ASCII.
        if metrics.keys() <= self._names:
            for value in metrics.values():
                if type(value) is not float and type(value) not in FAST_TYPES:
                    if type(value) is str and (value.isascii() or is_utf8(value)):
                        continue
                    record = self._snapshot(metrics, record)
                    break
        else:
            record = self._snapshot(metrics, record)

        if step is None:
            if self._auto_last != self._last_step:
                self._steps = count(self._last_step + 1)  # type: ignore[operator]
            # next() on a count is atomic: threads never share an automatic step.
            self._auto_last = record["step"] = step = next(self._steps)
        elif type(step) is not int or not INT_MIN <= step <= INT_MAX:
            record["step"] = step = check_step(step)
        self._last_step = step
        pending = writer.pending
        pending.append(record)
        if len(pending) >= writer.wake_at:
            writer.backlog()

    def _snapshot(
        self, metrics: Mapping[str, Any], record: dict[str, Any]
    ) -> dict[str, Any]:
        """The slow path: convert or refuse every value, remember the names."""
        checked = snapshot_record(metrics, record["time"])
        checked["step"] = record["step"]
        if len(self._names) < _MAX_NAMES:
            self._names.update(k for k in checked if k not in RESERVED)
        return checked

    def log_figure(self, fig: Any, name: str, step: Optional[int] = None) -> Path:
        """Save ``fig`` as ``figures/<name>.png`` and pass it to the sinks in order.

        ``fig`` is anything with a matplotlib-style ``savefig``. The file is written
        to a new temporary file and renamed, so a reader never sees half a PNG.

        Raises:
            ValueError: ``name`` is not a safe file name.
            TypeError: ``fig`` has no ``savefig``.
        """
        check_name(name, "name")
        savefig = getattr(fig, "savefig", None)
        if savefig is None:
            raise TypeError(
                f"fig must have a savefig method (a matplotlib Figure), got "
                f"{type(fig).__name__}"
            )
        writer = self._writer
        if writer.error is not None and writer.check_error():
            return self.paths.figures / f"{name}.png"
        if step is not None:
            step = check_step(step)
        self.paths.figures.mkdir(parents=True, exist_ok=True)
        target = self.paths.figures / f"{name}.png"
        _replace_file(target, lambda file: savefig(file, format="png"))
        writer.enqueue_control("figure", (target, name, step))
        return target

    def log_artifact(
        self, path: Union[str, os.PathLike[str]], name: Optional[str] = None
    ) -> Path:
        """Copy the file ``path`` into ``artifacts/`` (as ``name`` if given).

        The copy keeps the file's permission bits and times, and is written to a
        new temporary file and renamed, so a reader never sees half a file.

        Raises:
            FileNotFoundError: ``path`` is not an existing file.
            ValueError: the name is not a safe file name, or is ``config.yaml``,
                the box's config snapshot.
        """
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(
                f"log_artifact: {str(source)!r} is not an existing file"
            )
        name = check_name(source.name if name is None else name, "name")
        # Compared without case: on macOS and Windows Config.yaml is the same file.
        if name.casefold() == CONFIG_SNAPSHOT:
            raise ValueError(
                f"log_artifact: {name!r} would replace the box's config snapshot "
                f"artifacts/{CONFIG_SNAPSHOT}, which load(...).config reads; pass "
                f"another name, e.g. log_artifact(path, name='{source.stem}.src.yaml')"
            )
        self.paths.artifacts.mkdir(parents=True, exist_ok=True)
        target = self.paths.artifacts / name
        with open(source, "rb") as src:
            _replace_file(target, lambda file: _copy_file(src, file))
        return target

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Return once every record logged before the call is written and fsynced.

        Returns:
            False if ``timeout`` seconds passed first.

        Raises:
            WriterError: writing or fsyncing failed (the OS error and the file are
                named); unwritten records are kept and retried.
        """
        return self._writer.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> int:
        """Flush, stop the writer thread and close the sinks; safe to call twice.

        Returns:
            How many records may not be durable: 0 normally; more, with a warning,
            if the writer did not finish within ``timeout`` seconds.

        Raises:
            WriterError: the last records could not be written.
        """
        return self._writer.close(timeout)

    @property
    def last_step(self) -> Optional[int]:
        """The step of the last record logged, or None before the first."""
        return self._last_step

    def meta_extra(self) -> dict[str, Any]:
        """Dropped records and sink failures, for ``meta.extra``."""
        extra: dict[str, Any] = {}
        writer = self._writer
        if writer.drop_when_full:
            extra["dropped_records"] = writer.dropped
        if writer.sink_errors:
            extra["sink_errors"] = list(writer.sink_errors)
        return extra


def _replace_file(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Have ``write`` fill a new file, then rename it to ``target``.

    The temporary file gets a random name and is created exclusively, so a link
    planted in the directory cannot redirect the write, and two threads saving
    the same name never write into one file. On any error it is removed.
    """
    fd, temp = _create_temp(target)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _copy_file(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy ``src`` into ``dst`` with its permission bits and times, as copy2 does."""
    shutil.copyfileobj(src, dst, _COPY_BUFFER)
    dst.flush()
    st = os.fstat(src.fileno())
    # Through the descriptors, not the paths, which may be replaced meanwhile.
    os.chmod(dst.fileno(), stat.S_IMODE(st.st_mode))
    os.utime(dst.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
