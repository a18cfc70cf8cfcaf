"""Hand a box's records and figures to one W&B run, on a thread of its own.

``run.log`` is far slower than a local write, so the writer thread only queues
batches here and a second thread feeds W&B. The sink keeps W&B's rules (steps that
never go down) and its failures to itself: the box stays the complete record.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

_log = logging.getLogger("expbox")

#: Records W&B may fall behind before more are kept in the box only.
DEFAULT_CAPACITY = 100_000
#: Seconds ``close`` waits for W&B to take what is queued.
DEFAULT_DRAIN_TIMEOUT = 60.0


class WandbSink:
    """Send records and figures to one W&B run, on a thread of its own.

    The writer thread only hands batches over; ``expbox-wandb:<exp_id>`` calls
    ``run.log``, which costs hundreds of microseconds a row, so a slow W&B never
    delays the local file, its fsyncs or the heartbeat. When W&B falls more than
    ``capacity`` records behind, further batches are kept in the box only and
    counted in ``dropped``: the box is the complete record, W&B a view of it.

    W&B needs steps that never go down, so a record whose step is lower than one
    already sent is skipped and counted. Consecutive records with the same step are
    merged into one ``run.log`` call, which is what W&B does with them anyway.
    The first failure stops the sink and is kept in ``error``.
    """

    name = "wandb"

    def __init__(
        self,
        run: Any,
        wandb: ModuleType,
        *,
        exp_id: str = "",
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self.run = run
        self.error: Optional[str] = None
        self.skipped = 0
        self.dropped = 0
        self.closed = False
        self._wandb = wandb
        self._exp_id = exp_id
        self._capacity = capacity
        self._last_step = -1
        self._items: deque[tuple[str, Any, int]] = deque()
        self._queued = 0
        self._busy = False
        self._stopping = False
        self._cv = threading.Condition()
        self._thread: Optional[threading.Thread] = None

    def on_records(self, records: list[tuple[int, float, dict[str, Any]]]) -> None:
        if records:
            self._put("records", list(records), len(records))

    def on_figure(self, path: Path, name: str, step: Optional[int]) -> None:
        self._put("figure", (path, name, step), 1)

    def _put(self, kind: str, payload: Any, size: int) -> None:
        with self._cv:
            if self.error is not None or self._stopping:
                return
            if self._queued + size > self._capacity:
                self.dropped += size
                first_drop = self.dropped == size
            else:
                first_drop = False
                self._items.append((kind, payload, size))
                self._queued += size
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run,
                        name=f"expbox-wandb:{self._exp_id}",
                        daemon=True,
                    )
                    self._thread.start()
                self._cv.notify()
        if first_drop:
            warnings.warn(
                f"W&B is more than {self._capacity} records behind; records are "
                "kept in the box only until it catches up "
                "(meta.extra['wandb']['dropped'] counts them)",
                RuntimeWarning,
                stacklevel=2,
            )

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._items and not self._stopping:
                    self._cv.wait()
                if not self._items:
                    return
                kind, payload, size = self._items.popleft()
                self._busy = True
            try:
                if kind == "records":
                    self._send(payload)
                else:
                    self._send_figure(*payload)
            except Exception as exc:
                self._fail(exc)
            with self._cv:
                self._queued -= size
                self._busy = False
                if self.error is not None:
                    self._items.clear()
                    self._queued = 0
                self._cv.notify_all()
                if self.error is not None:
                    return

    def _send(self, records: list[tuple[int, float, dict[str, Any]]]) -> None:
        run_log = self.run.log
        pending: Optional[dict[str, Any]] = None
        pending_step = self._last_step
        for step, _time, metrics in records:
            if step < self._last_step or step < pending_step:
                self._skip(step)
                continue
            if pending is not None and step == pending_step:
                pending.update(metrics)
                continue
            if pending is not None:
                run_log(pending, step=pending_step)
                self._last_step = pending_step
            # The writer hands over metrics without step and time; a copy, as
            # records with the same step are merged into it.
            pending = dict(metrics)
            pending_step = step
        if pending is not None:
            run_log(pending, step=pending_step)
            self._last_step = pending_step

    def _send_figure(self, path: Path, name: str, step: Optional[int]) -> None:
        # A figure without a step belongs to the latest step W&B has seen.
        step = max(self._last_step, 0 if step is None else step)
        self.run.log({name: self._wandb.Image(str(path))}, step=step)
        self._last_step = step

    def drain(self, timeout: Optional[float] = None) -> bool:
        """Wait until W&B has every record handed over so far; False on timeout."""
        with self._cv:
            return self._cv.wait_for(
                lambda: (not self._items and not self._busy) or self.error is not None,
                timeout,
            )

    def close(self) -> None:
        """Take no more records; what is queued still goes to W&B.

        Called by the writer thread when it stops, so it must not wait for W&B:
        ``finish`` does the waiting, from ``WandbLogger.close``.
        """
        with self._cv:
            self._stopping = True
            self._cv.notify_all()

    def finish(
        self, timeout: Optional[float] = DEFAULT_DRAIN_TIMEOUT, exit_code: int = 0
    ) -> None:
        """Send what is queued, then finish the run; safe to call twice.

        Waits at most ``timeout`` seconds for the queue; what W&B has not taken by
        then stays in the box only, and the run is left to wandb's own exit hook.
        """
        self.close()
        with self._cv:
            if self.closed:
                return
            self.closed = True
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                with self._cv:
                    behind = self._queued
                self.error = self.error or (
                    f"W&B had not taken {behind} records after {timeout} s at close"
                )
                return
        if self.error is not None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as exc:
            self._fail(exc)

    def _skip(self, step: int) -> None:
        self.skipped += 1
        if self.skipped == 1:
            warnings.warn(
                f"W&B needs increasing steps: step {step} comes after step "
                f"{self._last_step} and is kept in the box only "
                "(meta.extra['wandb']['skipped'] counts such records)",
                RuntimeWarning,
                stacklevel=2,
            )

    def _fail(self, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        _log.debug("W&B sink failed", exc_info=exc)
        warnings.warn(
            f"W&B stopped receiving records ({self.error}); the box keeps logging "
            "locally to logs/metrics.jsonl",
            RuntimeWarning,
            stacklevel=2,
        )
        if isinstance(exc, ConnectionError):
            # W&B's service process is gone. Tearing its client down now keeps
            # wandb's own exit hook from failing loudly against a dead socket.
            try:
                self._wandb.teardown()
            except Exception as teardown_exc:
                _log.debug("wandb.teardown after a failure: %r", teardown_exc)
