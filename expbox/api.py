"""The front door: ``init``, ``load`` and ``save``."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional, Union

from . import envvars, lifecycle
from .config import load_config, read_config_snapshot, write_config_snapshot
from .context import ExpContext
from .errors import BoxNotFoundError
from .ids import claim_box
from .lock import BoxLock
from .meta import ExperimentMeta, now_iso, read_meta, write_meta
from .names import check_name
from .paths import ExpPaths
from .rank import RankInfo, detect_rank

_log = logging.getLogger("expbox")

LOGGERS = ("none", "file", "wandb")
RESUME_MODES = ("never", "allow", "must")
DEFAULT_HEARTBEAT_INTERVAL = 10.0

ConfigArg = Union[Mapping[str, Any], str, "os.PathLike[str]", None]


def init(
    project: str = "default",
    title: str = "",
    purpose: str = "",
    config: ConfigArg = None,
    logger: str = "file",
    results_root: Union[str, os.PathLike[str], None] = None,
    exp_id: Optional[str] = None,
    id_style: str = "datetime",
    prefix: Optional[str] = None,
    suffix: Optional[str] = None,
    link_style: str = "kebab",
    id_generator: Optional[Callable[[str, Path], str]] = None,
    *,
    resume: Optional[str] = None,
    rank: Optional[int] = None,
    env_note: Optional[str] = None,
    fsync_interval: Optional[float] = None,
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
    max_pending: Optional[int] = None,
    wandb: Optional[Mapping[str, Any]] = None,
) -> ExpContext:
    """Create a box (or continue one) and return its context.

    Everything the caller passed is checked before a directory is made, and a box
    that fails half-way is removed again, so a bad argument never leaves a half
    box behind.

    Args:
        project: Project name; ``seq`` ids derive from it.
        title: One line for listings.
        purpose: Why this run exists.
        config: A mapping, or a path to a ``.json``, ``.yaml`` or ``.yml`` file.
            Snapshotted to ``artifacts/config.yaml``.
        logger: ``"file"`` (default), ``"none"`` or ``"wandb"``.
        results_root: Where boxes live; default ``$EXPBOX_RESULTS_ROOT`` or
            ``results``.
        exp_id: An explicit id; default ``$EXPBOX_EXP_ID`` or a generated one.
        id_style: ``"datetime"``, ``"seq"`` or ``"random"`` for generated ids.
        prefix, suffix: Joined to a generated id with ``link_style``.
        link_style: ``"kebab"`` (``-``) or ``"snake"`` (``_``).
        id_generator: ``f(project, results_root) -> str`` for custom ids.
        resume: ``"never"`` (default: an existing ``exp_id`` is an error),
            ``"allow"`` (continue the box if it exists, create it otherwise) or
            ``"must"`` (the box must exist).
        rank: The global rank, overriding launcher variables.
        env_note: Free text about the environment, kept in ``meta.json``.
        fsync_interval: Seconds between fsyncs of the metrics file.
        heartbeat_interval: Seconds between signs of life in ``logs/heartbeat``.
        max_pending: Records that may wait for the writer before callers wait.
        wandb: Options for ``wandb.init`` (entity, tags, group, mode, ...).

    Returns:
        The context. On a rank other than 0 it writes nothing and starts no
        thread.

    Raises:
        ValueError: An argument is not valid; the message names it.
        BoxExistsError: ``exp_id`` exists and ``resume`` is ``"never"``.
        BoxNotFoundError: ``resume="must"`` and the box does not exist.
    """
    _check_choice("logger", logger, LOGGERS)
    resume_mode = "never" if resume is None else resume
    _check_choice("resume", resume_mode, RESUME_MODES)
    if not isinstance(project, str) or not project.strip():
        raise ValueError(f"project must be a non-empty string, got {project!r}")
    rank_info = detect_rank(rank)
    if exp_id is None:
        exp_id = os.environ.get(envvars.EXP_ID) or None
    if exp_id is not None:
        check_name(exp_id, "exp_id")
    for name, value in (("prefix", prefix), ("suffix", suffix)):
        if value is not None:
            check_name(value, name)
    if resume_mode != "never" and exp_id is None:
        raise ValueError(f"resume={resume_mode!r} needs an explicit exp_id")
    config_dict, config_source = load_config(config)
    root = _results_root(results_root)

    if not rank_info.is_main:
        return _context_for_other_rank(
            exp_id, root, project, title, purpose, config_dict, rank_info, logger
        )
    if logger == "wandb":
        from .wandb_logger import require_wandb

        require_wandb()

    options = {
        "fsync_interval": fsync_interval,
        "heartbeat_interval": heartbeat_interval,
        "max_pending": max_pending,
        "wandb": wandb,
    }
    if exp_id is not None and resume_mode != "never":
        existing = root / exp_id
        if (existing / "meta.json").exists():
            ctx = _reopen(
                existing, logger, rank_info, options, given_config=config_dict
            )
            return ctx
        if resume_mode == "must":
            raise BoxNotFoundError(
                f"resume='must' but no box {exp_id!r} exists under {root}"
            )

    exp_id, box = claim_box(
        root,
        project=project,
        exp_id=exp_id,
        id_style=id_style,
        prefix=prefix,
        suffix=suffix,
        link_style=link_style,
        id_generator=id_generator,
    )
    try:
        return _create(
            box,
            exp_id=exp_id,
            project=project,
            title=title,
            purpose=purpose,
            config=config_dict,
            config_source=config_source,
            logger=logger,
            env_note=env_note,
            rank_info=rank_info,
            options=options,
        )
    except BaseException:
        shutil.rmtree(box, ignore_errors=True)
        raise


def load(
    exp_id: str,
    results_root: Union[str, os.PathLike[str], None] = None,
    *,
    logger: str = "none",
    rank: Optional[int] = None,
    fsync_interval: Optional[float] = None,
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
    max_pending: Optional[int] = None,
    wandb: Optional[Mapping[str, Any]] = None,
) -> ExpContext:
    """Reopen an existing box with the config and metadata that were saved.

    With ``logger="none"`` (the default) the box is opened read-only: ``save``
    writes only what the caller changed in ``meta`` and the status stays as it
    was. With ``"file"`` or ``"wandb"`` the run continues: new records are
    appended to ``metrics.jsonl``, steps go on from the last logged step, the
    status goes back to ``running`` and the previous end is kept in
    ``meta.history``.

    Raises:
        BoxNotFoundError: no box ``exp_id`` under the results root.
        CorruptMetaError: its ``meta.json`` cannot be read; the file is left as it is.
        BoxLockedError: another live process is writing the box.
    """
    _check_choice("logger", logger, LOGGERS)
    check_name(exp_id, "exp_id")
    root = _results_root(results_root)
    box = root / exp_id
    if not (box / "meta.json").exists():
        raise BoxNotFoundError(f"no box {exp_id!r} under {root.resolve()}")
    rank_info = detect_rank(rank)
    if logger == "none" or not rank_info.is_main:
        return _open_read_only(box, rank_info, writable=rank_info.is_main)
    if logger == "wandb":
        from .wandb_logger import require_wandb

        require_wandb()
    options = {
        "fsync_interval": fsync_interval,
        "heartbeat_interval": heartbeat_interval,
        "max_pending": max_pending,
        "wandb": wandb,
    }
    return _reopen(box, logger, rank_info, options, given_config=None)


def save(ctx: ExpContext, status: Optional[str] = None) -> None:
    """Flush everything logged so far and write ``meta.json`` atomically.

    Safe to call more than once; the last call wins. The logger stays open, so a
    run may checkpoint its metadata and go on; the box is closed when the ``with``
    block ends, at ``ctx.close()`` or at interpreter exit. Does nothing on a rank
    other than 0.

    Args:
        ctx: The context from ``init`` or ``load``.
        status: ``"finished"`` by default; ``"failed"`` or ``"terminated"`` to
            record another outcome, which a clean exit then keeps.
    """
    if status is not None:
        from .meta import STATUSES

        _check_choice("status", status, STATUSES)
    if ctx._read_only_meta is not None:
        ctx._read_only_meta()
        return
    ctx.save(status)


# -- helpers ----------------------------------------------------------------------


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(
            f"{name}={value!r} is not valid; choose one of {', '.join(choices)}"
        )


def _results_root(results_root: Union[str, os.PathLike[str], None]) -> Path:
    if results_root is None:
        results_root = os.environ.get(envvars.RESULTS_ROOT) or "results"
    return Path(results_root)


def _system_info() -> dict[str, Any]:
    from .sysinfo import collect_system_info

    return collect_system_info()


def _distributed_info(rank_info: RankInfo) -> dict[str, Any]:
    return {
        "rank": rank_info.rank,
        "world_size": rank_info.world_size,
        "launcher": rank_info.launcher,
    }


def _make_logger(
    kind: str,
    paths: ExpPaths,
    *,
    exp_id: str,
    project: str,
    config: dict[str, Any],
    start_step: int,
    options: dict[str, Any],
    resume_run_id: Optional[str] = None,
) -> Any:
    from .loggers import FileLogger, NullLogger

    if kind == "none":
        return NullLogger()
    file_options: dict[str, Any] = {
        "exp_id": exp_id,
        "fsync_interval": options["fsync_interval"],
        "start_step": start_step,
        "heartbeat_interval": options["heartbeat_interval"],
    }
    if options["max_pending"] is not None:
        file_options["max_pending"] = options["max_pending"]
    if kind == "file":
        return FileLogger(paths, **file_options)
    from .wandb_logger import WandbLogger

    return WandbLogger(
        paths,
        project=project,
        config=config,
        resume_run_id=resume_run_id,
        wandb_options=options["wandb"],
        **file_options,
    )


def _create(
    box: Path,
    *,
    exp_id: str,
    project: str,
    title: str,
    purpose: str,
    config: dict[str, Any],
    config_source: Optional[str],
    logger: str,
    env_note: Optional[str],
    rank_info: RankInfo,
    options: dict[str, Any],
) -> ExpContext:
    paths = ExpPaths(box)
    paths.make_dirs()
    write_config_snapshot(paths.config_snapshot, config)
    meta = ExperimentMeta(
        exp_id=exp_id,
        project=project,
        title=title,
        purpose=purpose,
        config_path=config_source,
        logger=logger,
        env_note=env_note,
        system=_system_info(),
        distributed=_distributed_info(rank_info),
        heartbeat_interval=options["heartbeat_interval"],
    )
    lock = BoxLock(paths.lock)
    lock.acquire()
    try:
        write_meta(paths.meta, meta)
        log = _make_logger(
            logger,
            paths,
            exp_id=exp_id,
            project=project,
            config=config,
            start_step=0,
            options=options,
        )
    except BaseException:
        lock.release()
        raise
    ctx = ExpContext(
        exp_id=exp_id,
        paths=paths,
        config=config,
        meta=meta,
        logger=log,
        rank=rank_info.rank,
        lock=lock,
    )
    ctx._write_meta()
    lifecycle.register(ctx)
    _log.debug("created box %s", box)
    return ctx


def _reopen(
    box: Path,
    logger: str,
    rank_info: RankInfo,
    options: dict[str, Any],
    *,
    given_config: Optional[dict[str, Any]],
) -> ExpContext:
    """Continue writing an existing box: lock it, record the previous end."""
    paths = ExpPaths(box)
    meta = read_meta(paths.meta)
    config = _read_snapshot(paths)
    if given_config and given_config != config:
        warnings.warn(
            f"box {meta.exp_id} is resumed with its saved config; the config passed "
            "to init differs and was not written",
            UserWarning,
            stacklevel=3,
        )
    lock = BoxLock(paths.lock)
    lock.acquire()
    try:
        previous = {
            "started_at": meta.unknown.get("resumed_at") or meta.created_at,
            "finished_at": meta.finished_at,
            "status": meta.status,
            "error": meta.error,
            "host": meta.system.get("host"),
            "pid": meta.system.get("pid"),
        }
        meta.history.append(previous)
        meta.unknown["resumed_at"] = now_iso()
        meta.status = "running"
        meta.finished_at = None
        meta.error = None
        meta.logger = logger
        system = _system_info()
        system["first_run"] = {
            k: meta.system.get(k) for k in ("host", "command") if k in meta.system
        }
        meta.system = {**meta.system, **system}
        meta.distributed = _distributed_info(rank_info)
        meta.heartbeat_interval = options["heartbeat_interval"]
        _repair_torn_tail(paths.metrics)
        start_step = _next_step(paths)
        wandb_info = meta.extra.get("wandb") if isinstance(meta.extra, dict) else None
        run_id = wandb_info.get("run_id") if isinstance(wandb_info, dict) else None
        log = _make_logger(
            logger,
            paths,
            exp_id=meta.exp_id,
            project=meta.project,
            config=config,
            start_step=start_step,
            options=options,
            resume_run_id=run_id,
        )
    except BaseException:
        lock.release()
        raise
    ctx = ExpContext(
        exp_id=meta.exp_id,
        paths=paths,
        config=config,
        meta=meta,
        logger=log,
        rank=rank_info.rank,
        lock=lock,
    )
    ctx._write_meta()
    lifecycle.register(ctx)
    return ctx


def _read_snapshot(paths: ExpPaths) -> dict[str, Any]:
    if paths.config_snapshot.exists():
        return read_config_snapshot(paths.config_snapshot)
    return {}


def _repair_torn_tail(metrics: Path) -> None:
    """Close a line torn by a kill so the next record starts on its own line."""
    if not metrics.exists() or metrics.stat().st_size == 0:
        return
    with open(metrics, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.write(b"\n")


def _next_step(paths: ExpPaths) -> int:
    """One more than the last logged step, read from the end of the file."""
    import orjson

    if not paths.metrics.exists():
        return 0
    with open(paths.metrics, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        size = 4096
        while True:
            start = max(0, end - size)
            f.seek(start)
            lines = f.read(end - start).splitlines()
            # The first line of a window that does not start the file may be cut.
            complete = lines if start == 0 else lines[1:]
            for line in reversed(complete):
                try:
                    step = orjson.loads(line).get("step")
                except (orjson.JSONDecodeError, AttributeError):
                    continue
                if isinstance(step, int):
                    return step + 1
            if start == 0:
                return 0
            size *= 4


def _open_read_only(box: Path, rank_info: RankInfo, *, writable: bool) -> ExpContext:
    from .loggers import NullLogger

    paths = ExpPaths(box)
    meta = read_meta(paths.meta)
    ctx = ExpContext(
        exp_id=meta.exp_id,
        paths=paths,
        config=_read_snapshot(paths),
        meta=meta,
        logger=NullLogger(),
        rank=rank_info.rank,
        writable=False,
    )
    if writable:

        def write_changed_meta() -> None:
            write_meta(paths.meta, ctx.meta)

        ctx._read_only_meta = write_changed_meta
    return ctx


def _context_for_other_rank(
    exp_id: Optional[str],
    root: Path,
    project: str,
    title: str,
    purpose: str,
    config: dict[str, Any],
    rank_info: RankInfo,
    logger: str,
) -> ExpContext:
    """A context that accepts every call and touches nothing: not rank 0."""
    from .loggers import NullLogger

    meta = ExperimentMeta(
        exp_id=exp_id or "",
        project=project,
        title=title,
        purpose=purpose,
        logger=logger,
        distributed=_distributed_info(rank_info),
    )
    return ExpContext(
        exp_id=exp_id,
        paths=ExpPaths(root / exp_id) if exp_id else None,
        config=config,
        meta=meta,
        logger=NullLogger(),
        rank=rank_info.rank,
        writable=False,
    )
