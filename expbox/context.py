"""``ExpContext``: what ``xb.init`` and ``xb.load`` hand to user code."""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable

from . import lifecycle
from .meta import ExperimentMeta, now_iso, write_meta
from .paths import ExpPaths

if TYPE_CHECKING:
    from .lock import BoxLock
    from .loggers import Logger

_log = logging.getLogger("expbox")
_NEVER_SAVED = object()


class ExpContext:
    """One experiment: its id, paths, config, metadata and logger.

    On a rank other than 0 (``is_main`` false) ``save`` and the logger do nothing
    and no file is touched. On a box opened read-only the logger does nothing and
    ``save``, ``close`` and leaving a ``with`` block write only the caller's edits
    to ``meta``.

    Attributes:
        exp_id: The box's id; on other ranks the shared id if one was given, else
            ``None``.
        paths: Where the parts of the box live (``None`` when ``exp_id`` is).
        config: The normalized config, a plain ``dict``.
        meta: The metadata written to ``meta.json`` by ``save``.
        logger: ``log_metrics``, ``log_figure``, ``log_artifact``, ``flush``.
        rank: The detected global rank, ``None`` in a plain single process.
    """

    def __init__(
        self,
        *,
        exp_id: str | None,
        paths: ExpPaths | None,
        config: dict[str, Any],
        meta: ExperimentMeta,
        logger: Logger,
        rank: int | None = None,
        is_main: bool,
        writable: bool = True,
        lock: BoxLock | None = None,
    ) -> None:
        self.exp_id = exp_id
        self.paths = paths
        self.config = config
        self.meta = meta
        self.logger = logger
        self.rank = rank
        # From the rank detection, not from ``rank``: an unknown rank on a job
        # of several nodes is never main.
        self._is_main = is_main
        self._writable = writable
        self._lock = lock
        self._closed = not writable
        self._explicit_status: str | None = None
        self._saved_step: object = _NEVER_SAVED
        # Set for a box loaded read-only: saving then merges the caller's edits
        # into the current ``meta.json`` (with an explicit status, if given).
        self._read_only_meta: Callable[[str | None], None] | None = None
        # Re-entrant: the SIGTERM handler may run while this thread is saving.
        self._save_lock = threading.RLock()

    @property
    def is_main(self) -> bool:
        """True on the process that writes the box (global rank 0, or no launcher)."""
        return self._is_main

    @property
    def writable(self) -> bool:
        """True while this process owns the box and may write to it."""
        return self._writable and not self._closed

    def __repr__(self) -> str:
        where = self.paths.root if self.paths else None
        return (
            f"ExpContext(exp_id={self.exp_id!r}, root={str(where)!r}, rank={self.rank})"
        )

    # -- reading back ---------------------------------------------------------------

    def metrics(self, keys: list[str] | None = None) -> list[dict[str, Any]]:
        """The records logged so far, with NaN and infinities restored."""
        return list(self.iter_metrics(keys))

    def iter_metrics(self, keys: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Stream the records from ``logs/metrics.jsonl`` without loading them all."""
        from .reader import read_records

        if self.paths is None or not self.paths.metrics.exists():
            return iter(())
        if self.writable:
            self.logger.flush()
        return read_records(self.paths.metrics, keys=keys)

    # -- saving and closing ---------------------------------------------------------

    def save(self, status: str | None = None) -> None:
        """Flush the logger and write ``meta.json``; see ``expbox.save``."""
        if self._read_only_meta is not None:
            self._read_only_meta(status)
            return
        if not self.writable:
            return
        with self._save_lock:
            self.logger.flush()
            # The last call wins: a plain save forgets an earlier explicit status.
            self._explicit_status = status
            self.meta.status = status or "finished"
            self.meta.finished_at = now_iso()
            if self.meta.status == "finished":
                self.meta.error = None
            self._write_meta()
            self._saved_step = self.logger.last_step

    def close(self) -> None:
        """Finalize as ``finished`` (unless saved otherwise) and stop the logger.

        On a box opened read-only this writes the caller's edits to ``meta``.
        """
        if self._read_only_meta is not None:
            self._read_only_meta(None)
            return
        self._finalize(status="finished", error=None, timeout=None)

    def __enter__(self) -> ExpContext:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._read_only_meta is not None:
            self._read_only_meta(None)
            return
        if exc is None:
            self._finalize(status="finished", error=None, timeout=None)
            return
        status = "terminated" if isinstance(exc, KeyboardInterrupt) else "failed"
        error = {"type": type(exc).__name__, "message": str(exc)}
        self._finalize(status=status, error=error, timeout=None, forced=True)

    def _write_meta(self) -> None:
        assert self.paths is not None
        extra = self.logger.meta_extra()
        if extra:
            self.meta.extra.update(extra)
        write_meta(self.paths.meta, self.meta)

    def _final_status(
        self, status: str, error: dict[str, str] | None, forced: bool, by_signal: bool
    ) -> tuple[str, dict[str, str] | None]:
        """The status the box ends with, given how the process is ending."""
        if by_signal and self.logger.last_step == self._saved_step:
            # Ended by a signal after a save with nothing logged since: the
            # save stands (a pool terminating an idle worker cut nothing short).
            return self.meta.status, self.meta.error
        keep = self._explicit_status
        if not forced and status == "finished" and keep not in (None, "finished"):
            # The caller saved an explicit outcome; a clean exit keeps it.
            return keep, self.meta.error
        return status, error

    def _finalize(
        self,
        *,
        status: str,
        error: dict[str, str] | None,
        timeout: float | None,
        forced: bool = False,
        by_signal: bool = False,
    ) -> None:
        """Close the logger, write the final ``meta.json``, release the box."""
        if self._closed:
            return
        with self._save_lock:
            if self._closed:
                return
            self._closed = True
            lifecycle.unregister(self)
            status, error = self._final_status(status, error, forced, by_signal)
            try:
                lost = _close_logger(self.logger, timeout, status)
            except Exception as exc:
                # The records are already reported lost by the logger; the metadata
                # must still be finalized, with the reason.
                lost = None
                _log.debug("closing the logger of %s failed: %r", self.exp_id, exc)
                self.meta.extra["writer_error"] = str(exc)
            if lost:
                self.meta.extra["records_not_durable"] = lost
            self.meta.status = status
            self.meta.error = error
            self.meta.finished_at = now_iso()
            try:
                self._write_meta()
            finally:
                if self._lock is not None:
                    self._lock.release()

    def _become_inherited_copy(self) -> None:
        """Called in a forked child: this process must never touch the box."""
        self._closed = True
        self._save_lock = threading.RLock()
        if self._lock is not None:
            self._lock.drop_inherited()
            self._lock = None


def _close_logger(logger: Any, timeout: float | None, status: str) -> Any:
    """Close ``logger``, telling a backend that keeps an exit code how the run ended."""
    if "exit_code" in inspect.signature(logger.close).parameters:
        return logger.close(timeout=timeout, exit_code=0 if status == "finished" else 1)
    return logger.close(timeout=timeout)
