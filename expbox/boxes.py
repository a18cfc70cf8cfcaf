"""Find the boxes under a results root and summarize each without reading it whole.

Listing reads ``meta.json`` as a plain mapping, so a box whose metadata is corrupt
is still listed (with status ``corrupt``) instead of breaking the whole listing.
Last values come from the end of ``logs/metrics.jsonl``, through ``tail.read_tail``,
so the cost does not depend on how long the run was.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import BoxNotFoundError
from .names import check_name
from .paths import DEFAULT_HEARTBEAT_INTERVAL, META_FILE, ExpPaths
from .tail import MetricsTail, open_regular, read_tail

logger = logging.getLogger("expbox")

#: Seconds between heartbeats when ``meta.json`` does not say.
#: A heartbeat older than this many intervals means the writer is gone.
STALE_AFTER_INTERVALS = 3
#: Statuses a listing can show: the four a box records, plus ``stale`` (recorded
#: ``running``, but its process is gone) and ``corrupt`` (unreadable ``meta.json``).
SHOWN_STATUSES = ("running", "stale", "finished", "failed", "terminated", "corrupt")

# The largest pid any supported system hands out (pid_t is a signed 32-bit int); a
# larger number in meta.json is not a pid, and os.kill would overflow on it.
_MAX_PID = 2**31 - 1

# A process that started this long after ``meta.json`` was last written cannot be
# the one that wrote it: its pid was reused (typically after a reboot). The margin
# absorbs clock adjustments between the two readings.
_PID_REUSE_MARGIN = 60.0


@dataclass
class BoxInfo:
    """What a listing knows about one box, from ``meta.json`` and a few ``stat``s.

    ``status`` is the status to show: the recorded one, except ``stale`` for a
    ``running`` box whose process is gone and ``corrupt`` when ``meta.json`` cannot
    be read. ``problem`` says why in one sentence for those two.
    """

    exp_id: str
    path: Path
    status: str
    meta: dict[str, Any] | None
    problem: str | None = None
    created: _dt.datetime | None = None
    finished: _dt.datetime | None = None
    last_sign_of_life: float | None = None

    @property
    def paths(self) -> ExpPaths:
        return ExpPaths(self.path)

    def get(self, key: str, default: Any = None) -> Any:
        """A top-level ``meta.json`` value, or ``default`` (always, when corrupt)."""
        return default if self.meta is None else self.meta.get(key, default)

    @property
    def duration(self) -> float | None:
        """Seconds from creation to the end, to now if running, to the last sign
        of life if stale; ``None`` when unknown."""
        if self.created is None:
            return None
        if self.finished is not None:
            end = self.finished.timestamp()
        elif self.status == "running":
            end = time.time()
        elif self.last_sign_of_life is not None:
            end = self.last_sign_of_life
        else:
            return None
        return max(0.0, end - self.created.timestamp())

    @property
    def sort_time(self) -> float:
        if self.created is not None:
            return self.created.timestamp()
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0


def parse_time(value: Any) -> _dt.datetime | None:
    """An ISO 8601 timestamp from ``meta.json`` as an aware datetime, else ``None``.

    A time that cannot be shown in local time (a year 1 or 9999 edge) is ``None``
    too, so that formatting it later cannot fail.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        # Python < 3.11 does not read a trailing "Z".
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is not None and 1 < parsed.year < 9999:
            return parsed
        local = parsed.astimezone()
        local.timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo is not None else local


def _usable_pid(pid: Any) -> int | None:
    """``pid`` if it can name a process, else ``None``: never 0 or a negative
    number, which ``os.kill`` reads as a whole process group."""
    if type(pid) is int and 0 < pid <= _MAX_PID:
        return pid
    return None


def _pid_alive(pid: Any, written_at: float | None) -> bool | None:
    """Whether ``pid`` is a live process on this host that may have written the box.

    ``EPERM`` from ``kill(pid, 0)`` means the process exists under another user.
    On Linux a zombie counts as gone, and so does a process that started after
    ``meta.json`` was written (a reused pid). ``None`` when the pid cannot tell:
    it is not a usable pid, or this system cannot be asked.
    """
    if _usable_pid(pid) is None:
        return None
    if os.name == "nt":
        # On Windows os.kill(pid, 0) would terminate the process: never judge there.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    except (OverflowError, ValueError):
        return None
    if not sys.platform.startswith("linux"):
        return True
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
        fields = proc_stat[proc_stat.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            return False
        if written_at is None:
            return True
        started_ticks = int(fields[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        started = boot + started_ticks / os.sysconf("SC_CLK_TCK")
        return started <= written_at + _PID_REUSE_MARGIN
    except (OSError, ValueError, IndexError, StopIteration):
        return True


def _fresh_mtime(path: Path) -> float | None:
    """The mtime of ``path``, or ``None`` if it cannot be read.

    The file is opened rather than stat'ed: on NFS, opening revalidates cached
    attributes (close-to-open consistency), where a ``stat`` may return an mtime
    up to a minute old and make a live run on another node look stale.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)


def _liveness(
    meta: dict[str, Any], paths: ExpPaths, meta_mtime: float | None
) -> tuple[str, str | None, float | None]:
    """``(status, problem, last_sign_of_life)`` of a box recorded as running."""
    system = meta.get("system") if isinstance(meta.get("system"), dict) else {}
    host = system.get("host")
    pid = system.get("pid")
    heartbeat = _fresh_mtime(paths.heartbeat)
    alive = _pid_alive(pid, meta_mtime) if host == socket.gethostname() else None
    if alive:
        return "running", None, heartbeat
    if alive is False:
        last = max(heartbeat or 0.0, meta_mtime or 0.0)
        with contextlib.suppress(OSError):
            last = max(last, paths.metrics.stat().st_mtime)
        return "stale", f"process {pid} on this host is gone", last
    if heartbeat is None:
        # Another host (or no usable pid) and no heartbeat: nothing to judge by,
        # so trust the record.
        return "running", None, None
    interval = meta.get("heartbeat_interval")
    if (
        not isinstance(interval, (int, float))
        or isinstance(interval, bool)
        or not 0 < interval < math.inf
    ):
        interval = DEFAULT_HEARTBEAT_INTERVAL
    age = time.time() - heartbeat
    if age > STALE_AFTER_INTERVALS * interval:
        return "stale", f"no heartbeat for {age:.0f} s (host {host})", heartbeat
    return "running", None, heartbeat


def inspect_box(path: str | os.PathLike[str]) -> BoxInfo:
    """Read one box's ``meta.json`` and judge whether a running box is alive."""
    info = _inspect(os.fspath(path), missing_ok=False)
    assert info is not None
    return info


def _inspect(path: str, missing_ok: bool) -> BoxInfo | None:
    """``inspect_box`` on a plain string path; ``None`` if ``missing_ok`` and the
    directory has no ``meta.json`` (it is not a box)."""
    box = Path(path)
    try:
        meta, meta_mtime = _read_meta(os.path.join(path, META_FILE))
    except (OSError, ValueError) as exc:
        if missing_ok and isinstance(exc, FileNotFoundError):
            return None
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        logger.debug("unreadable meta.json in %s: %s", path, exc)
        return BoxInfo(box.name, box, "corrupt", None, f"meta.json: {reason}")
    try:
        return _judge(box, meta, meta_mtime)
    except Exception as exc:
        # Whatever a hand-edited meta.json holds, one box must not break a
        # listing of all of them: show it as corrupt and say why.
        logger.debug("cannot understand meta.json in %s", path, exc_info=True)
        problem = f"meta.json cannot be understood ({type(exc).__name__}: {exc})"
        return BoxInfo(box.name, box, "corrupt", None, problem)


def _read_meta(path: str) -> tuple[dict[str, Any], float]:
    """The mapping in a ``meta.json`` and its mtime.

    A FIFO in its place is refused instead of hanging the listing.

    Raises:
        OSError: the file cannot be read or is not a regular file.
        ValueError: it does not hold a JSON object.
    """
    with open_regular(path) as f:
        mtime = os.fstat(f.fileno()).st_mtime
        meta = orjson.loads(f.read())
    if not isinstance(meta, dict):
        raise ValueError("the top level is not a JSON object")
    return meta, mtime


def _judge(box: Path, meta: dict[str, Any], meta_mtime: float) -> BoxInfo:
    """The shown status of a box whose ``meta.json`` holds ``meta``."""
    status = meta.get("status")
    info = BoxInfo(
        exp_id=box.name,
        path=box,
        status=status if isinstance(status, str) else "corrupt",
        meta=meta,
        created=parse_time(meta.get("created_at")),
        finished=parse_time(meta.get("finished_at")),
    )
    if info.status == "corrupt":
        info.problem = "meta.json has no status"
    elif status == "running":
        info.status, info.problem, info.last_sign_of_life = _liveness(
            meta, ExpPaths(box), meta_mtime
        )
    return info


def list_boxes(
    results_root: str | os.PathLike[str],
    *,
    project: str | None = None,
    status: Sequence[str] | str | None = None,
) -> list[BoxInfo]:
    """Every box under ``results_root``, newest first.

    A box is a directory holding ``meta.json`` (hidden directories are skipped).
    ``project`` and ``status`` filter on the shown status (``stale`` and
    ``corrupt`` included); metrics files are not opened.

    Raises:
        FileNotFoundError: ``results_root`` is not a directory.
    """
    root = Path(results_root)
    if not root.is_dir():
        raise FileNotFoundError(f"results root {str(root)!r} is not a directory")
    wanted = {status} if isinstance(status, str) else set(status or ())
    boxes = []
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            info = _inspect(entry.path, missing_ok=True)
            if info is None:
                continue
            if project is not None and info.get("project") != project:
                continue
            if wanted and info.status not in wanted:
                continue
            boxes.append(info)
    boxes.sort(key=lambda box: (box.sort_time, box.exp_id), reverse=True)
    return boxes


def find_box(results_root: str | os.PathLike[str], exp_id: str) -> BoxInfo:
    """The box ``exp_id`` under ``results_root``; a unique prefix of an id is enough.

    Raises:
        ValueError: ``exp_id`` is not one path component (``../x``), or a prefix
            matches several boxes.
        BoxNotFoundError: no box has this id.
        FileNotFoundError: ``results_root`` is not a directory.
    """
    check_name(exp_id, "exp_id")
    root = Path(results_root)
    if not root.is_dir():
        raise FileNotFoundError(f"results root {str(root)!r} is not a directory")
    if (root / exp_id).is_dir():
        return inspect_box(root / exp_id)
    matches = sorted(
        name
        for name in os.listdir(root)
        if name.startswith(exp_id)
        and not name.startswith(".")
        and (root / name / META_FILE).exists()
    )
    if len(matches) == 1:
        return inspect_box(root / matches[0])
    if matches:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise ValueError(f"exp_id={exp_id!r} matches several boxes: {shown}")
    raise BoxNotFoundError(f"no box {exp_id!r} under {str(root)!r}")


def json_value(value: Any) -> Any:
    """A value made safe for strict JSON: NaN and infinities as the file spells them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    return value


def box_summary(box: BoxInfo, tail: MetricsTail | None = None) -> dict[str, Any]:
    """A flat, JSON-ready summary of one box, for notes and external trackers.

    Final metrics appear as ``final.<key>``; non-finite floats are written as the
    strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``. Paths are absolute, for
    links from outside the results root.
    """
    if tail is None:
        tail = read_tail(box.paths.metrics, max_bytes=1024 * 1024)
    extra = box.get("extra")
    wandb = extra.get("wandb") if isinstance(extra, dict) else None
    snapshot = box.paths.config_snapshot
    duration = box.duration
    summary: dict[str, Any] = {
        "id": box.exp_id,
        "project": box.get("project"),
        "title": box.get("title"),
        "purpose": box.get("purpose"),
        "status": box.status,
        "created": box.get("created_at"),
        "finished": box.get("finished_at"),
        "duration_s": None if duration is None else round(duration, 3),
        "path": str(box.path.resolve()),
        "config_path": box.get("config_path"),
        "config_snapshot": str(snapshot.resolve()) if snapshot.exists() else None,
        "wandb_url": wandb.get("url") if isinstance(wandb, dict) else None,
        "final_note": box.get("final_note"),
        "last_step": tail.last_step,
    }
    if box.problem:
        summary["problem"] = box.problem
    for key, value in tail.values.items():
        summary[f"final.{key}"] = json_value(value)
    return summary
