"""Process-wide hooks that finalize every open box however the process ends.

One exit hook, one ``sys.excepthook`` wrapper, one SIGTERM handler and one fork hook
serve all contexts. Open contexts are held strongly until they are closed: a script
that drops its last reference to a context still expects its box finalized at exit.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import signal
import sys
import threading
import warnings
from typing import TYPE_CHECKING, Any

from . import envvars

if TYPE_CHECKING:
    from .context import ExpContext

_log = logging.getLogger("expbox")

_live: dict[int, ExpContext] = {}
_live_lock = threading.Lock()
_installed = False
_uncaught: BaseException | None = None
_previous_excepthook: Any = None
_previous_sigterm: Any = None
_sigterm_installed = False
_terminating = False

DEFAULT_EXIT_TIMEOUT = 10.0


def exit_timeout() -> float:
    """Seconds a writer gets at exit or SIGTERM before its records are given up."""
    raw = os.environ.get(envvars.EXIT_TIMEOUT)
    if raw is None or raw == "":
        return DEFAULT_EXIT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        # Read at exit, where raising would leave every box unfinalized.
        warnings.warn(
            f"{envvars.EXIT_TIMEOUT}={raw!r} is not a finite number of seconds; "
            f"using {DEFAULT_EXIT_TIMEOUT:g}",
            RuntimeWarning,
            stacklevel=2,
        )
        return DEFAULT_EXIT_TIMEOUT
    return max(value, 0.0)


def register(ctx: ExpContext) -> None:
    """Track a writable context until it is closed; install the hooks once."""
    _install_hooks()
    if not _sigterm_installed:
        # Only the main thread may install it: a first init on a worker thread
        # leaves it to a later one on the main thread.
        _install_sigterm_handler()
    with _live_lock:
        _live[id(ctx)] = ctx
    _register_multiprocessing_finalizer()


def unregister(ctx: ExpContext) -> None:
    """Stop tracking a context; safe to call twice."""
    with _live_lock:
        _live.pop(id(ctx), None)


def live_contexts() -> list[ExpContext]:
    with _live_lock:
        return list(_live.values())


def _install_hooks() -> None:
    global _installed, _previous_excepthook
    if _installed:
        return
    _installed = True
    atexit.register(finalize_all_at_exit)
    _previous_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    _wrap_sys_exit()
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _install_sigterm_handler() -> None:
    """Chain onto SIGTERM unless it is ignored or we are not on the main thread."""
    global _previous_sigterm, _sigterm_installed
    if threading.current_thread() is not threading.main_thread():
        _log.debug("not on the main thread: SIGTERM handler not installed yet")
        return
    _sigterm_installed = True
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, AttributeError):
        return
    if previous is signal.SIG_IGN or previous is None:
        # Ignored on purpose by the caller, or installed from C: leave it alone.
        return
    _previous_sigterm = previous
    signal.signal(signal.SIGTERM, _on_sigterm)


def _excepthook(exc_type: type, exc: BaseException, tb: Any) -> None:
    global _uncaught
    _uncaught = exc
    hook = _previous_excepthook or sys.__excepthook__
    hook(exc_type, exc, tb)


def _wrap_sys_exit() -> None:
    """Remember the code passed to ``sys.exit``, which no hook is told about.

    ``atexit`` cannot see the exit status, so ``sys.exit(1)`` would otherwise read
    as a clean finish. ``raise SystemExit(1)`` written out by hand, and a
    ``SystemExit`` caught and swallowed by the caller, are not seen this way.
    """
    original = sys.exit

    def recording_exit(status: object = None) -> None:
        global _exit_status
        _exit_status = status
        original(status)

    recording_exit.__doc__ = original.__doc__
    recording_exit.__wrapped__ = original  # type: ignore[attr-defined]
    sys.exit = recording_exit


_exit_status: object = None


def _status_for(exc: BaseException | None) -> tuple[str, dict[str, str] | None]:
    if exc is None and _exit_status not in (None, 0):
        # sys.exit("message") prints the message and exits with status 1.
        code = _exit_status if isinstance(_exit_status, int) else 1
        message = f"sys.exit({_exit_status!r}): exit status {code}"
        return "failed", {"type": "SystemExit", "message": message}
    if exc is None:
        return "finished", None
    error = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, KeyboardInterrupt):
        return "terminated", error
    return "failed", error


def finalize_all_at_exit() -> None:
    """Flush and finalize every open context; the interpreter is exiting."""
    status, error = _status_for(_uncaught)
    _finalize_all(status, error)


def _finalize_all(
    status: str, error: dict[str, str] | None, *, by_signal: bool = False
) -> None:
    timeout = exit_timeout()
    for ctx in live_contexts():
        try:
            ctx._finalize(
                status=status, error=error, timeout=timeout, by_signal=by_signal
            )
        except Exception as exc:  # one broken box must not stop the others
            _log.debug("finalizing %s failed: %r", ctx.exp_id, exc)
            warnings.warn(
                f"expbox could not finalize box {ctx.exp_id}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )


def _on_sigterm(signum: int, frame: Any) -> None:
    """Finalize as ``terminated``, then do what would have happened without us."""
    global _terminating
    if _terminating:
        # A second SIGTERM while the first is handled: the first finishes the job.
        return
    _terminating = True
    _finalize_all(
        "terminated",
        {"type": "SIGTERM", "message": f"received signal {signum}"},
        by_signal=True,
    )
    previous = _previous_sigterm
    if callable(previous):
        _terminating = False
        previous(signum, frame)
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _after_fork_in_child() -> None:
    """An inherited context does nothing in the child; the parent owns the box."""
    global _live_lock, _terminating
    _live_lock = threading.Lock()
    contexts = list(_live.values())
    _live.clear()
    _terminating = False
    for ctx in contexts:
        ctx._become_inherited_copy()


_mp_finalizer_pid: int | None = None


def _register_multiprocessing_finalizer() -> None:
    """Finalize in ``multiprocessing`` children too, which end with ``os._exit``.

    A child started by ``multiprocessing`` (fork or spawn) skips ``atexit``; its
    finalizers with an exit priority still run, so register one there.
    """
    global _mp_finalizer_pid
    if "multiprocessing" not in sys.modules or _mp_finalizer_pid == os.getpid():
        return
    import multiprocessing.process
    import multiprocessing.util

    if multiprocessing.process.parent_process() is None:
        return  # the main process: atexit already covers it
    _mp_finalizer_pid = os.getpid()
    multiprocessing.util.Finalize(None, finalize_all_at_exit, exitpriority=100)
