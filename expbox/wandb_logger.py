"""Weights & Biases as a sink of the background writer.

``WandbLogger`` is a ``FileLogger`` whose writer thread also hands every record and
figure to a W&B run after writing it to ``logs/metrics.jsonl``. The box stays complete
on its own: a W&B failure costs W&B data only, never a local record, and is reported
once (a warning and ``meta_extra()``) instead of being raised into the training loop.

``wandb`` is imported only when a logger is built, never by ``import expbox``.
"""

from __future__ import annotations

import atexit
import logging
import netrc
import os
import re
import secrets
import string
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, Optional

from .config import normalize_config
from .errors import MissingDependencyError
from .loggers import FileLogger
from .paths import ExpPaths
from .records import RESERVED

_log = logging.getLogger("expbox")

INSTALL_HINT = 'pip install "expbox[wandb]"'
DEFAULT_BASE_URL = "https://api.wandb.ai"
#: Seconds ``wandb.init`` may take before it gives up, unless the caller says.
DEFAULT_INIT_TIMEOUT = 60.0
#: Seconds ``run.finish()`` may upload before the rest is left for ``wandb sync``.
DEFAULT_FINISH_TIMEOUT = 60.0
#: Records W&B may fall behind before more are kept in the box only.
DEFAULT_CAPACITY = 100_000
#: Seconds ``close`` waits for W&B to take what is queued.
DEFAULT_DRAIN_TIMEOUT = 60.0

# Arguments expbox decides itself; each maps to the way to influence it instead.
_RESERVED = {
    "project": "the project argument of expbox.init",
    "config": "the config argument of expbox.init",
    "dir": "nothing: W&B's files always live in the box under logs/wandb/",
    "resume": "nothing: a resumed box resumes its W&B run",
}
_UNSAFE_RUN_ID = re.compile(r"[^A-Za-z0-9_-]")
_RUN_ID_PREFIX_LENGTH = 48
_TAG_ALPHABET = string.ascii_lowercase + string.digits


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


def make_run_id(exp_id: str, tag: Optional[str] = None) -> str:
    """Return a new W&B run id for the box ``exp_id``.

    W&B ids are safest with letters, digits, ``_`` and ``-``; every other character
    becomes ``-``. A short random tag follows, because two machines that log to one
    W&B project can make boxes with the same id in the same minute, and W&B would
    otherwise merge them into one run. The id is stored in ``meta.extra`` so a
    resumed box finds its run again.
    """
    if tag is None:
        tag = "".join(secrets.choice(_TAG_ALPHABET) for _ in range(6))
    safe = _UNSAFE_RUN_ID.sub("-", exp_id)[:_RUN_ID_PREFIX_LENGTH]
    return f"{safe}-{tag}"


def find_credentials(
    environ: Optional[Mapping[str, str]] = None, base_url: Optional[str] = None
) -> Optional[str]:
    """Name where W&B would find credentials for ``base_url``, or return None.

    Looks at ``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE`` and the netrc file
    (``$NETRC``, else ``~/.netrc`` or ``~/_netrc``) for the host of ``base_url``,
    ``WANDB_BASE_URL``, W&B's settings file or the W&B cloud. Only the presence of
    a key is checked: its value is never returned, logged or stored.
    """
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    if env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "WANDB_IDENTITY_TOKEN_FILE"
    url = base_url or env.get("WANDB_BASE_URL") or _configured_base_url(env)
    host = url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    path = _netrc_path(env)
    if path is None or not host:
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError) as exc:
        _log.debug("netrc file %s not usable: %s", path, type(exc).__name__)
        return None
    return "netrc" if entry is not None and bool(entry[2]) else None


def _configured_base_url(env: Mapping[str, str]) -> str:
    """The server ``wandb login --host`` saved in W&B's settings file, or the cloud."""
    import configparser

    home = env.get("HOME") or os.path.expanduser("~")
    config_dir = env.get("WANDB_CONFIG_DIR") or os.path.join(home, ".config", "wandb")
    parser = configparser.ConfigParser()
    try:
        parser.read(os.path.join(config_dir, "settings"), encoding="utf-8")
        return parser.get("default", "base_url", fallback=DEFAULT_BASE_URL)
    except (OSError, configparser.Error):
        return DEFAULT_BASE_URL


def _netrc_path(env: Mapping[str, str]) -> Optional[Path]:
    if env.get("NETRC"):
        return Path(env["NETRC"]).expanduser()
    home = env.get("HOME") or os.path.expanduser("~")
    for name in (".netrc", "_netrc"):
        candidate = Path(home) / name
        if candidate.is_file():
            return candidate
    return None


def _is_interactive() -> bool:
    """Whether someone can answer a login prompt on this process's terminal."""
    try:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            return False
        # A job put in the background (``python train.py &``) keeps the terminal
        # but would be stopped by the first read from it.
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (AttributeError, ValueError, OSError):  # replaced or closed streams
        return False


def choose_mode(
    options: Mapping[str, Any],
    settings: Mapping[str, Any],
    environ: Optional[Mapping[str, str]] = None,
    interactive: Optional[bool] = None,
) -> tuple[Optional[str], Optional[str]]:
    """Return ``(mode, reason)``: the mode expbox forces, and why, or ``(None, None)``.

    A mode the user chose (``wandb_options["mode"]``, ``settings["mode"]``,
    ``WANDB_MODE``, ``WANDB_DISABLED``) always wins. Otherwise, without credentials
    and without a terminal, W&B could only fail or wait for a login that never comes,
    so the run is made offline: it is kept in the box for ``wandb sync``.
    """
    env = os.environ if environ is None else environ
    if options.get("mode") or settings.get("mode"):
        return None, None
    if env.get("WANDB_MODE") or env.get("WANDB_DISABLED"):
        return None, None
    if settings.get("api_key") or settings.get("identity_token_file"):
        return None, None
    if find_credentials(env, settings.get("base_url")) is not None:
        return None, None
    if interactive is None:
        interactive = _is_interactive()
    if interactive:
        return None, None
    return "offline", "no W&B credentials were found and there is no terminal to log in"


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
                pending.pop("step", None)
                pending.pop("time", None)
                continue
            if pending is not None:
                run_log(pending, step=pending_step)
                self._last_step = pending_step
            # W&B keeps its own step and time; expbox's reserved names stay local.
            pending = {k: v for k, v in metrics.items() if k not in RESERVED}
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


class WandbLogger(FileLogger):
    """A ``FileLogger`` that also sends every record and figure to a W&B run.

    The local box is written exactly as with ``logger="file"``; the W&B run gets the
    same records with the same steps, from the writer thread after the local write.
    W&B's files go to ``logs/wandb/`` inside the box. If ``wandb.init`` fails
    (network, timeout, bad credentials) the logger still logs locally and says why
    in a warning and in ``meta_extra()``.

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
        settings = _settings_dict(options.pop("settings", None))
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
        _set_default_timeouts(wandb, settings)
        options.setdefault("name", exp_id)
        # A run of its own, whatever else is active in the process; it is not
        # ``wandb.run`` then, so integrations take ``ctx.logger.run``.
        options.setdefault("reinit", "create_new")
        options.setdefault("id", resume_run_id or make_run_id(exp_id))
        try:
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


def _settings_dict(settings: Any) -> dict[str, Any]:
    """The caller's W&B settings as a dict of the fields they set."""
    if settings is None:
        return {}
    if isinstance(settings, Mapping):
        return dict(settings)
    # A wandb.Settings (pydantic): keep only what the caller set explicitly.
    fields_set = getattr(settings, "model_fields_set", None)
    if fields_set is None:
        raise TypeError(
            f"wandb option 'settings' must be a dict or wandb.Settings, got "
            f"{type(settings).__name__}"
        )
    return {name: getattr(settings, name) for name in fields_set}


def _set_default_timeouts(wandb: ModuleType, settings: dict[str, Any]) -> None:
    """Bound ``wandb.init`` and ``run.finish()`` unless the caller already did.

    A timeout set in the settings or through ``WANDB_INIT_TIMEOUT`` /
    ``WANDB_FINISH_TIMEOUT`` wins; a wandb too old to know a setting is left alone.
    """
    known = getattr(wandb.Settings, "model_fields", {})
    for name, seconds in (
        ("init_timeout", DEFAULT_INIT_TIMEOUT),
        ("finish_timeout", DEFAULT_FINISH_TIMEOUT),
    ):
        if name in settings or os.environ.get(f"WANDB_{name.upper()}"):
            continue
        if name in known:
            settings[name] = seconds


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
