"""Weights & Biases as a sink of the background writer.

``WandbLogger`` is a ``FileLogger`` whose writer thread also hands every record and
figure to a W&B run after writing it to ``logs/metrics.jsonl``. The box stays complete
on its own: a W&B failure costs W&B data only, never a local record, and is reported
once (a warning and ``meta_extra()``) instead of being raised into the training loop.

``wandb`` is imported only when a logger is built, never by ``import expbox``. The
choice of mode and run id lives in ``wandb_mode``, the thread that feeds ``run.log``
in ``wandb_sink``; this module builds the run and finishes it, at close or at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, Optional

from .errors import MissingDependencyError
from .loggers import FileLogger
from .normalize import normalize_config
from .paths import ExpPaths
from .wandb_mode import (
    choose_mode,
    make_run_id,
    masked_argv,
    set_default_timeouts,
    settings_dict,
)
from .wandb_sink import DEFAULT_DRAIN_TIMEOUT, WandbSink

_log = logging.getLogger("expbox")

INSTALL_HINT = 'pip install "expbox[wandb]"'

# Arguments expbox decides itself; each maps to the way to influence it instead.
_RESERVED = {
    "project": "the project argument of expbox.init",
    "config": "the config argument of expbox.init",
    "dir": "nothing: W&B's files always live in the box under logs/wandb/",
    "resume": "nothing: a resumed box resumes its W&B run",
}


def require_wandb() -> ModuleType:
    """Import and return ``wandb``; call before any box is made.

    Raises:
        MissingDependencyError: wandb is not installed; the message says how to
            install it.
    """
    try:
        import wandb
    except ImportError as exc:
        raise MissingDependencyError(
            f'logger="wandb" needs the wandb package, which is not installed: '
            f"{INSTALL_HINT}"
        ) from exc
    return wandb


class WandbLogger(FileLogger):
    """A ``FileLogger`` that also sends every record and figure to a W&B run.

    The local box is written exactly as with ``logger="file"``; the W&B run gets the
    same records with the same steps, from the writer thread after the local write.
    W&B's files go to ``logs/wandb/`` inside the box. If ``wandb.init`` fails
    (network, timeout, bad credentials) the logger still logs locally and says why
    in a warning and in ``meta_extra()``. W&B records the command line with secret
    values masked, as ``meta.json`` does; ``settings={"x_disable_meta": True}``
    keeps W&B from recording any system metadata at all.

    Args:
        paths: The box.
        exp_id: The box id; the run's name, and the start of its id.
        project: The W&B project.
        config: The box's config, already normalized to plain types.
        resume_run_id: The run id of an earlier run of this box, to continue it.
        wandb_options: More ``wandb.init`` arguments: ``entity``, ``tags``,
            ``group``, ``mode``, ``notes``, ``name``, ``id``, ``settings`` ...
            ``reinit`` defaults to ``"create_new"``: the box's run is then not
            ``wandb.run``. ``project``, ``config``, ``dir`` and ``resume`` are set
            by expbox and refused here.
        **file_logger_kwargs: Passed on to ``FileLogger``.

    Raises:
        MissingDependencyError: wandb is not installed.
        TypeError: ``wandb_options`` holds an argument ``wandb.init`` does not take.
        ValueError: ``wandb_options`` holds an argument expbox sets itself.
    """

    def __init__(
        self,
        paths: ExpPaths,
        *,
        exp_id: str,
        project: str,
        config: Optional[Mapping[str, Any]] = None,
        resume_run_id: Optional[str] = None,
        wandb_options: Optional[Mapping[str, Any]] = None,
        **file_logger_kwargs: Any,
    ) -> None:
        wandb = require_wandb()
        options = _check_options(wandb, wandb_options)
        self._box_paths = paths
        self._project = project
        self._offline_reason: Optional[str] = None
        self._init_error: Optional[str] = None
        self.run: Any = None
        self._sink: Optional[WandbSink] = None

        self._pid = os.getpid()

        self.run = self._start_run(
            wandb, exp_id, project, config, resume_run_id, options
        )
        sinks = tuple(file_logger_kwargs.pop("sinks", ()))
        if self.run is not None:
            self._sink = WandbSink(self.run, wandb, exp_id=exp_id)
            sinks = (*sinks, self._sink)
        try:
            super().__init__(paths, exp_id=exp_id, sinks=sinks, **file_logger_kwargs)
        except BaseException:
            if self._sink is not None:
                self._sink.finish()
            raise
        if self._sink is not None:
            _track(self)

    def _start_run(
        self,
        wandb: ModuleType,
        exp_id: str,
        project: str,
        config: Optional[Mapping[str, Any]],
        resume_run_id: Optional[str],
        options: dict[str, Any],
    ) -> Any:
        settings = settings_dict(options.pop("settings", None))
        mode, reason = choose_mode(options, settings)
        if mode is not None:
            options["mode"] = mode
            self._offline_reason = reason
            warnings.warn(
                f"W&B runs offline: {reason}. The run is kept in the box under "
                "logs/wandb/; upload it later with `wandb sync`, or set WANDB_MODE "
                "or WANDB_API_KEY to choose",
                UserWarning,
                stacklevel=_user_stacklevel(),
            )
        set_default_timeouts(wandb, settings)
        options.setdefault("name", exp_id)
        # A run of its own, whatever else is active in the process; it is not
        # ``wandb.run`` then, so integrations take ``ctx.logger.run``.
        options.setdefault("reinit", "create_new")
        options.setdefault("id", resume_run_id or make_run_id(exp_id))
        try:
            # W&B records the command line in the run it keeps in the box; it gets
            # the one meta.json records, with secret values masked.
            with masked_argv():
                run = wandb.init(
                    project=project,
                    config=normalize_config(dict(config or {})),
                    dir=str(self._box_paths.logs),
                    resume="allow",
                    settings=settings,
                    **options,
                )
        except Exception as exc:
            self._init_error = f"{type(exc).__name__}: {exc}"
            _log.debug("wandb.init failed", exc_info=exc)
            warnings.warn(
                f"W&B could not start a run ({self._init_error}); the box logs "
                "locally only",
                RuntimeWarning,
                stacklevel=_user_stacklevel(),
            )
            return None
        return run

    def close(self, timeout: Optional[float] = None, *, exit_code: int = 0) -> int:
        """Flush and close the box's writer, then finish the W&B run.

        Safe to call twice. ``exit_code`` other than 0 marks the W&B run failed.
        Returns the number of records that could not be made durable locally (0
        normally); W&B problems only show in ``meta_extra()``.
        """
        try:
            return super().close(timeout=timeout)
        finally:
            # A forked child must not finish the parent's run.
            if self._sink is not None and os.getpid() == self._pid:
                self._sink.finish(_drain_timeout(timeout), exit_code=exit_code)

    def wait_for_wandb(self, timeout: Optional[float] = None) -> bool:
        """Wait until W&B has taken every record written so far; False on timeout.

        ``flush`` only makes the box durable; this also waits for the W&B thread,
        e.g. before reading the run back. True at once without a W&B run.
        """
        if self._sink is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.flush(timeout=timeout):
            return False
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        return self._sink.drain(left)

    def _finish_wandb(self, timeout: Optional[float], exit_code: int = 0) -> None:
        """Send what is pending to W&B and finish the run; the box stays open."""
        if self._sink is None or self._sink.closed or os.getpid() != self._pid:
            return
        self.flush(timeout=timeout)
        self._sink.finish(_drain_timeout(timeout), exit_code=exit_code)

    def meta_extra(self) -> dict[str, Any]:
        """What to record in ``meta.extra``: the writer's notes and ``"wandb"``."""
        extra = dict(super().meta_extra())
        extra["wandb"] = self._wandb_info()
        return extra

    def _wandb_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"project": self._project}
        run = self.run
        if run is not None:
            info["run_id"] = run.id
            info["mode"] = _mode_of(run)
            url = getattr(run, "url", None)
            if url:
                info["url"] = url
            run_dir = _run_dir(run)
            if run_dir is not None:
                info["dir"] = _relative(run_dir, self._box_paths.root)
        else:
            info["run_id"] = None
            info["mode"] = None
        if self._offline_reason:
            info["offline_reason"] = self._offline_reason
        sink = self._sink
        if sink is not None and sink.skipped:
            info["skipped"] = sink.skipped
        if sink is not None and sink.dropped:
            info["dropped"] = sink.dropped
        info["error"] = self._init_error or (sink.error if sink is not None else None)
        return info


def _drain_timeout(timeout: Optional[float]) -> float:
    return DEFAULT_DRAIN_TIMEOUT if timeout is None else timeout


def _check_options(
    wandb: ModuleType, wandb_options: Optional[Mapping[str, Any]]
) -> dict[str, Any]:
    if wandb_options is None:
        return {}
    if not isinstance(wandb_options, Mapping):
        raise TypeError(
            f"wandb options must be a dict of wandb.init arguments, got "
            f"{type(wandb_options).__name__}"
        )
    options = dict(wandb_options)
    for key in options:
        if key in _RESERVED:
            raise ValueError(
                f"wandb option {key!r} is set by expbox; use {_RESERVED[key]}"
            )
    import inspect

    accepted = inspect.signature(wandb.init).parameters
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        raise TypeError(
            f"wandb.init takes no argument {unknown[0]!r}; the wandb options "
            "are passed to wandb.init (entity, tags, group, mode, settings, ...)"
        )
    return options


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside expbox."""
    frame: Optional[FrameType] = sys._getframe(1)
    level = 1
    while (
        frame is not None
        and frame.f_globals.get("__name__", "").split(".")[0] == "expbox"
    ):
        frame = frame.f_back
        level += 1
    return level


def _mode_of(run: Any) -> Optional[str]:
    settings = getattr(run, "settings", None)
    mode = getattr(settings, "mode", None)
    if mode == "dryrun":
        return "offline"
    if mode == "run":
        return "online"
    return mode


def _run_dir(run: Any) -> Optional[Path]:
    files_dir = getattr(run, "dir", None)
    return Path(files_dir).parent if files_dir else None


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


# One exit hook for every W&B logger, run before wandb's own teardown so the last
# records reach the run before W&B closes it. wandb registers its hook when its
# service starts, so expbox's hook is moved behind it after every wandb.init.
_live: weakref.WeakSet[WandbLogger] = weakref.WeakSet()
_live_lock = threading.Lock()


def _track(logger: WandbLogger) -> None:
    with _live_lock:
        _live.add(logger)
    atexit.unregister(_finish_all_at_exit)
    atexit.register(_finish_all_at_exit)


def _finish_all_at_exit() -> None:
    from .lifecycle import exit_timeout

    with _live_lock:
        loggers = list(_live)
    # The interpreter keeps an uncaught exception here before the exit hooks run;
    # W&B then marks the run failed, as the box's meta.json will be.
    exit_code = 0 if getattr(sys, "last_value", None) is None else 1
    for logger in loggers:
        try:
            logger._finish_wandb(timeout=exit_timeout(), exit_code=exit_code)
        except Exception as exc:  # one broken logger must not stop the others
            _log.debug("finishing a W&B run at exit failed: %r", exc)
