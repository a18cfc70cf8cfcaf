"""Open a box for the front door: create it, continue it, or read it.

Each function returns a ready ``ExpContext``; ``api`` checks the caller's
arguments first, so everything here may assume valid input.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any, Optional

from . import lifecycle
from .config import read_config_snapshot, write_config_snapshot
from .context import ExpContext
from .lock import BoxLock
from .meta import ExperimentMeta, now_iso, read_meta, write_meta
from .paths import ExpPaths
from .rank import RankInfo

_log = logging.getLogger("expbox")
_NONE = object()


def _system_info() -> dict[str, Any]:
    from .sysinfo import collect_system_info

    return collect_system_info()


def _distributed_info(rank_info: RankInfo) -> dict[str, Any]:
    return {
        "rank": rank_info.rank,
        "world_size": rank_info.world_size,
        "launcher": rank_info.launcher,
    }


def make_logger(
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


def create_box(
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
        log = make_logger(
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
    _log.debug("created box %s", box)
    return _writing_context(paths, config, meta, log, rank_info, lock)


def reopen_box(
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
    # A box moved without its empty folders (git, some sync tools) gets them back.
    paths.make_dirs()
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
        start_step = _next_step(paths)
        wandb_info = meta.extra.get("wandb") if isinstance(meta.extra, dict) else None
        run_id = wandb_info.get("run_id") if isinstance(wandb_info, dict) else None
        log = make_logger(
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
    return _writing_context(paths, config, meta, log, rank_info, lock)


def _writing_context(
    paths: ExpPaths,
    config: dict[str, Any],
    meta: ExperimentMeta,
    log: Any,
    rank_info: RankInfo,
    lock: BoxLock,
) -> ExpContext:
    """The context of a box this process now owns; finalized at exit."""
    ctx = ExpContext(
        exp_id=meta.exp_id,
        paths=paths,
        config=config,
        meta=meta,
        logger=log,
        rank=rank_info.rank,
        is_main=rank_info.is_main,
        lock=lock,
    )
    ctx._write_meta()
    lifecycle.register(ctx)
    return ctx


def _read_snapshot(paths: ExpPaths) -> dict[str, Any]:
    if paths.config_snapshot.exists():
        return read_config_snapshot(paths.config_snapshot)
    return {}


def _next_step(paths: ExpPaths) -> int:
    """One more than the last logged step, read from the end of the file."""
    from .tail import read_tail

    last = read_tail(paths.metrics, keys=[]).last_step
    return 0 if last is None else last + 1


def open_read_only(box: Path, rank_info: RankInfo, *, writable: bool) -> ExpContext:
    """A context over a box another process may still be writing.

    ``save`` on it re-reads ``meta.json`` and writes back only the fields the
    caller changed, so a run that finished meanwhile keeps its status and notes.
    Two processes saving the same box at the same instant can still lose one
    of their changes: the read and the write are not one step.
    """
    from .loggers import NullLogger

    paths = ExpPaths(box)
    meta = read_meta(paths.meta)
    loaded = copy.deepcopy(meta.to_dict())
    ctx = ExpContext(
        exp_id=meta.exp_id,
        paths=paths,
        config=_read_snapshot(paths),
        meta=meta,
        logger=NullLogger(),
        rank=rank_info.rank,
        is_main=rank_info.is_main,
        writable=False,
    )
    if writable:

        def write_changed_meta(status: Optional[str]) -> None:
            if status is not None:
                ctx.meta.status = status
                ctx.meta.finished_at = now_iso()
            mine = ctx.meta.to_dict()
            changed = {k: v for k, v in mine.items() if loaded.get(k, _NONE) != v}
            current = read_meta(paths.meta).to_dict()
            current.update(copy.deepcopy(changed))
            write_meta(paths.meta, ExperimentMeta.from_dict(current))
            loaded.clear()
            loaded.update(copy.deepcopy(current))

        ctx._read_only_meta = write_changed_meta
    return ctx


def context_for_other_rank(
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
        is_main=rank_info.is_main,
        writable=False,
    )
