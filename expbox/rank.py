"""Which rank of a distributed job this process is.

Only rank 0 writes a box. The rank comes, in this order, from an explicit argument,
``EXPBOX_RANK``, a launcher's global-rank variable, or an initialized
``torch.distributed``. Everything is read when :func:`detect_rank` is called, never at
import, and torch is never imported here.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from . import envvars

__all__ = ["RankInfo", "detect_rank"]

_log = logging.getLogger("expbox")

#: What ``RankInfo.launcher`` says when the rank came from a local rank alone.
LOCAL_RANK_ONLY = "local-rank"


class _Family(NamedTuple):
    """The variables one launcher exports to each process it starts."""

    launcher: str
    rank: str
    world_size: str | None
    local_rank: str | None
    local_world_size: str | None


# The order is the precedence. A launcher started inside another one (torchrun or
# mpirun inside an srun step or an sbatch script) inherits the outer launcher's
# variables unchanged, so every child sees, say, SLURM_PROCID=0. The inner launcher is
# the one that knows the real rank, and the inner ones come first here: torchrun's
# RANK, then the MPI families, then the schedulers. OpenMPI also exports PMIX_RANK,
# which is why it precedes the bare PMIx entry.
_FAMILIES = (
    _Family("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    _Family(
        "openmpi",
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
    ),
    _Family("pmix", "PMIX_RANK", None, None, None),
    _Family("mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    _Family(
        "mvapich",
        "MV2_COMM_WORLD_RANK",
        "MV2_COMM_WORLD_SIZE",
        "MV2_COMM_WORLD_LOCAL_RANK",
        "MV2_COMM_WORLD_LOCAL_SIZE",
    ),
    _Family("pals", "PALS_RANKID", None, "PALS_LOCAL_RANKID", "PALS_LOCAL_SIZE"),
    _Family("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", None),
    _Family(
        "lsf",
        "JSM_NAMESPACE_RANK",
        "JSM_NAMESPACE_SIZE",
        "JSM_NAMESPACE_LOCAL_RANK",
        "JSM_NAMESPACE_LOCAL_SIZE",
    ),
)

# Node counts and node indices that reveal a job spanning several machines.
_NODE_COUNT_VARS = ("SLURM_NNODES", "SLURM_JOB_NUM_NODES")
_NODE_INDEX_VARS = ("GROUP_RANK", "NODE_RANK", "SLURM_NODEID", "PALS_NODEID")

# ASCII digits only: int() would also take other scripts' digits and underscores.
_DIGITS = re.compile(r"\s*[0-9]+\s*")


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in a distributed job.

    Attributes:
        rank: The global rank; ``None`` when it is not known.
        world_size: The number of processes in the job, when a launcher says so.
        local_rank: The rank among the processes of this node, when known.
        launcher: Where the rank came from: ``"explicit"``, ``"env:EXPBOX_RANK"``, a
            launcher family (``"torchrun"``, ``"openmpi"``, ``"pmix"``, ``"mpich"``,
            ``"mvapich"``, ``"pals"``, ``"slurm"``, ``"lsf"``),
            ``"torch.distributed"``, ``"local-rank"`` (only a local rank was set), or
            ``None`` for a plain single process.
    """

    rank: int | None
    world_size: int | None
    local_rank: int | None
    launcher: str | None

    @property
    def is_main(self) -> bool:
        """Whether this process writes the box.

        True for rank 0 and for a plain process with no launcher at all. A process
        whose launcher was seen but whose global rank is unknown (``rank`` is
        ``None`` and ``launcher`` is not) is never main, so a job cannot end up
        with two boxes.
        """
        if self.rank is None:
            return self.launcher is None
        return self.rank == 0


def detect_rank(
    explicit: int | None = None, environ: Mapping[str, str] | None = None
) -> RankInfo:
    """Find this process's global rank, world size and local rank.

    The first source that is set wins: ``explicit``, then ``EXPBOX_RANK``, then a
    launcher's global-rank variable (``RANK``, ``OMPI_COMM_WORLD_RANK``,
    ``PMIX_RANK``, ``PMI_RANK``, ``MV2_COMM_WORLD_RANK``, ``PALS_RANKID``,
    ``SLURM_PROCID``, ``JSM_NAMESPACE_RANK``), then an initialized
    ``torch.distributed`` the caller already imported. Failing all of those, a local
    rank alone (``LOCAL_RANK``, ``SLURM_LOCALID``, ...) is the rank only on a single
    node; in a job that may span several nodes the rank is unknown and the process
    is not main (a local rank 0 warns once, saying how to fix it).

    Args:
        explicit: A rank given by the caller; it wins over everything else.
        environ: The environment to read; ``os.environ`` when omitted.

    Returns:
        A :class:`RankInfo`. ``world_size`` and ``local_rank`` come from the same
        launcher as the rank (for an explicit rank or ``EXPBOX_RANK``, from the
        launcher that would have been used otherwise) and are ``None`` when that
        launcher does not export them.

    Raises:
        TypeError: ``explicit`` is not an int.
        ValueError: ``explicit`` is negative, or a variable that is read is set but
            is not a non-negative integer; the message names the variable.
    """
    env = os.environ if environ is None else environ
    family = next((f for f in _FAMILIES if f.rank in env), None)

    if explicit is not None:
        if isinstance(explicit, bool) or not isinstance(explicit, int):
            raise TypeError(
                f"rank must be an int or None, got {type(explicit).__name__}"
            )
        if explicit < 0:
            raise ValueError(f"rank must be >= 0, got {explicit}")
        return RankInfo(explicit, *_sizes(env, family, strict=False), "explicit")

    override = _read_int(env, envvars.RANK)
    if override is not None:
        sizes = _sizes(env, family, strict=False)
        return RankInfo(override, *sizes, f"env:{envvars.RANK}")

    if family is not None:
        rank = _read_int(env, family.rank)
        return RankInfo(rank, *_sizes(env, family, strict=True), family.launcher)

    from_torch = _torch_distributed_rank()
    if from_torch is not None:
        return from_torch

    return _from_local_rank(env)


def _sizes(
    env: Mapping[str, str], family: _Family | None, *, strict: bool
) -> tuple[int | None, int | None]:
    """World size and local rank exported by ``family``.

    With ``strict=False`` a malformed value reads as unknown: a caller who chose the
    rank by hand must not be stopped by a launcher variable it does not need.
    """
    if family is None:
        return None, None
    try:
        world_size = _read_int(env, family.world_size) if family.world_size else None
        local_rank = _read_int(env, family.local_rank) if family.local_rank else None
    except ValueError:
        if strict:
            raise
        _log.debug("ignoring a malformed launcher variable", exc_info=True)
        return None, None
    return world_size, local_rank


def _torch_distributed_rank() -> RankInfo | None:
    """The rank of an initialized default process group, if the user made one."""
    # Only a module the user already imported counts: importing torch here would
    # cost seconds and make every rank pay for a library it may not use.
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return None
    try:
        if not (dist.is_available() and dist.is_initialized()):
            return None
        rank, world_size = int(dist.get_rank()), int(dist.get_world_size())
    except Exception:  # a half-torn-down group must not break init
        _log.debug("torch.distributed is imported but gave no rank", exc_info=True)
        return None
    return RankInfo(rank, world_size, None, "torch.distributed")


def _from_local_rank(env: Mapping[str, str]) -> RankInfo:
    """Decide from a local rank alone, when no global rank is known.

    On one node the local rank is the global rank. On several nodes every node has
    a local rank 0, so taking it as the global rank would make one box per node;
    such a process is treated as "rank unknown", which is never main.
    """
    found = next(
        (f for f in _FAMILIES if f.local_rank is not None and f.local_rank in env),
        None,
    )
    if found is None or found.local_rank is None:
        return RankInfo(None, None, None, None)

    local_rank = _read_int(env, found.local_rank)
    world_size = _read_int(env, found.world_size) if found.world_size else None
    local_size = (
        _read_int(env, found.local_world_size) if found.local_world_size else None
    )
    if not _several_nodes(env, world_size, local_size):
        return RankInfo(local_rank, world_size, local_rank, LOCAL_RANK_ONLY)

    if local_rank == 0:
        warnings.warn(
            f"expbox found {found.local_rank}={local_rank} but no global rank in a "
            "job that may span several nodes, so this process writes no box; pass "
            f"rank= to init or set {envvars.RANK}",
            RuntimeWarning,
            # Through xb.init this points at the user's call of init.
            stacklevel=4,
        )
    return RankInfo(None, world_size, local_rank, LOCAL_RANK_ONLY)


def _several_nodes(
    env: Mapping[str, str], world_size: int | None, local_size: int | None
) -> bool:
    """Whether the job may span more than one node.

    A world larger than one node's share, a world of several with no local size to
    compare, more than one node, or a node index above 0 all count as yes.
    """
    # Without a local size there is no telling how a world of several is spread.
    if world_size is not None and world_size > (local_size or 1):
        return True
    for name in _NODE_COUNT_VARS:
        count = _read_int(env, name)
        if count is not None and count > 1:
            return True
    for name in _NODE_INDEX_VARS:
        index = _read_int(env, name)
        if index is not None and index > 0:
            return True
    return False


def _read_int(env: Mapping[str, str], name: str) -> int | None:
    """The non-negative integer in ``env[name]``, or None when it is unset."""
    value = env.get(name)
    if value is None:
        return None
    if not _DIGITS.fullmatch(value):
        raise ValueError(
            f"environment variable {name}={value!r} is not a non-negative integer; "
            "fix or unset it, or pass rank= explicitly"
        )
    return int(value)
