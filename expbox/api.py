"""The front door: ``init``, ``load`` and ``save``."""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional, Union

from . import envvars, opener
from .config import load_config
from .context import ExpContext
from .errors import BoxExistsError, BoxNotFoundError
from .ids import claim_box
from .names import check_name
from .paths import DEFAULT_HEARTBEAT_INTERVAL
from .rank import detect_rank

LOGGERS = ("none", "file", "wandb")
RESUME_MODES = ("never", "allow", "must")

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
        return opener.context_for_other_rank(
            exp_id, root, project, title, purpose, config_dict, rank_info, logger
        )
    options = _writer_options(
        logger, fsync_interval, heartbeat_interval, max_pending, wandb
    )
    if exp_id is not None and resume_mode != "never":
        existing = root / exp_id
        if (existing / "meta.json").exists():
            ctx = opener.reopen_box(
                existing, logger, rank_info, options, given_config=config_dict
            )
            return ctx
        if resume_mode == "must":
            raise BoxNotFoundError(
                f"resume='must' but no box {exp_id!r} exists under {root}"
            )

    try:
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
    except BoxExistsError:
        if resume_mode == "never":
            raise
        # Another process claimed the id between our look and our claim: wait
        # for its meta.json, then resume (its lock decides who writes).
        existing = root / exp_id  # type: ignore[operator]
        _wait_for_meta(existing)
        return opener.reopen_box(
            existing, logger, rank_info, options, given_config=config_dict
        )
    try:
        return opener.create_box(
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
        return opener.open_read_only(box, rank_info, writable=rank_info.is_main)
    options = _writer_options(
        logger, fsync_interval, heartbeat_interval, max_pending, wandb
    )
    return opener.reopen_box(box, logger, rank_info, options, given_config=None)


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
    ctx.save(status)


# -- helpers ----------------------------------------------------------------------


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(
            f"{name}={value!r} is not valid; choose one of {', '.join(choices)}"
        )


def _writer_options(
    logger: str,
    fsync_interval: Optional[float],
    heartbeat_interval: float,
    max_pending: Optional[int],
    wandb: Optional[Mapping[str, Any]],
) -> dict[str, Any]:
    """The logger's settings; with W&B, fail before a box is made if it is missing."""
    if (
        isinstance(heartbeat_interval, bool)
        or not isinstance(heartbeat_interval, (int, float))
        or not math.isfinite(heartbeat_interval)
        or heartbeat_interval <= 0
    ):
        raise ValueError(
            f"heartbeat_interval={heartbeat_interval!r} must be a positive number of "
            "seconds"
        )
    if logger == "wandb":
        from .wandb_logger import require_wandb

        require_wandb()
    return {
        "fsync_interval": fsync_interval,
        "heartbeat_interval": heartbeat_interval,
        "max_pending": max_pending,
        "wandb": wandb,
    }


def _wait_for_meta(box: Path, timeout: float = 10.0) -> None:
    """Wait for a box that another process is creating to get its meta.json."""
    deadline = time.monotonic() + timeout
    while not (box / "meta.json").exists():
        if time.monotonic() > deadline:
            raise BoxExistsError(
                f"{box} exists but has no meta.json after {timeout:.0f} s (an init "
                "that was killed?); remove the directory or choose another exp_id"
            )
        time.sleep(0.01)


def _results_root(results_root: Union[str, os.PathLike[str], None]) -> Path:
    if results_root is None:
        results_root = os.environ.get(envvars.RESULTS_ROOT) or "results"
    if os.fspath(results_root) == "":
        raise ValueError("results_root must not be empty; use '.' for this directory")
    root = Path(results_root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"results_root={str(root)!r} exists and is not a directory")
    return root
