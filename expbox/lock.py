"""One writing process per box, by an advisory ``flock`` on ``logs/writer.lock``.

The kernel drops the lock when its holder dies, so a process killed with SIGKILL
leaves nothing behind that blocks the next run. A forked child inherits the open
file; expbox closes the child's copy at fork, which leaves the parent's lock intact.
``flock`` on NFS is only as good as the server's lock support; on Lustre it needs the
``flock`` mount option.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import BoxLockedError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, one writer is the user's promise.
    fcntl = None  # type: ignore[assignment]


class BoxLock:
    """An exclusive, non-blocking lock held for as long as the box is written."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``BoxLockedError`` naming the holder's pid."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise BoxLockedError(
                    f"{self.path.parent.parent} is already being written{holder}; "
                    "open it read-only with logger='none' or wait for it"
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock; safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def drop_inherited(self) -> None:
        """Close a forked child's copy of the descriptor.

        Closing a duplicate does not unlock: the parent keeps its lock.
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    if pid == str(os.getpid()):
        return " (this process: close the other context first)"
    return f" (pid {pid})" if pid.isdigit() else ""
