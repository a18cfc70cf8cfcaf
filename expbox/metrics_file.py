"""The writer's file steps: open the metrics file, write the heartbeat, read settings.

These are the file-level steps of ``writer.MetricsWriter`` that take no part in
its thread protocol: each runs once, at start or when the file must be reopened,
never per record, so keeping them apart leaves ``writer.py`` to the queue, the
locks and the write loop.
"""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path
from typing import Optional

from . import envvars

DEFAULT_FSYNC_INTERVAL = 2.0


def open_for_append(path: Path) -> int:
    """Open ``path`` for appending (created if missing) and return its descriptor.

    A last line left without its newline, torn by a kill, gets one first.
    """
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    try:
        # A line torn by SIGKILL must not swallow the first new record.
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")
    except BaseException:
        os.close(fd)
        raise
    return fd


def file_identity(st: os.stat_result) -> tuple[int, int]:
    """What tells one file from another at the same path: device and inode."""
    return (st.st_dev, st.st_ino)


def write_heartbeat(path: Path) -> None:
    """Write the heartbeat file: the pid and host of the process that logs."""
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    Path(path).write_text(text + "\n")


def read_fsync_interval(value: Optional[float]) -> float:
    """``value`` in seconds, or ``EXPBOX_FSYNC_INTERVAL`` (default 2.0) if None.

    Raises:
        ValueError: the interval is negative, NaN or infinite: any of these would
            switch the periodic fsync off.
    """
    if value is None:
        name = envvars.FSYNC_INTERVAL
        seconds = read_float_env(name, DEFAULT_FSYNC_INTERVAL)
        shown = f"{name}={os.environ.get(name)!r}"
    else:
        seconds = float(value)
        shown = f"fsync_interval={value!r}"
    # NaN compares False with everything, so test what is wanted, not what is not.
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(
            f"{shown} must be a finite number of seconds, 0 or more "
            "(0 fsyncs every batch)"
        )
    return seconds


def read_float_env(name: str, default: float) -> float:
    """The number of seconds in environment variable ``name``; ``default`` if unset.

    Raises:
        ValueError: the variable is set to something other than a number.
    """
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
