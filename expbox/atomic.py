"""Atomic replacement of a small file: a reader sees the old file or the new one."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

_log = logging.getLogger("expbox")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` so that no reader ever sees half a file.

    The bytes go to a temporary file in the same directory, which is flushed,
    fsynced and renamed over ``path``; then the directory is fsynced so the
    rename itself survives a power loss. On any error the temporary file is
    removed and ``path`` is left as it was. Only a process killed outright
    (SIGKILL, power loss) can leave a ``.<name>.<random>.tmp`` file behind, and
    even then ``path`` is whole.

    The file is created with mode ``0o666`` minus the umask, like ``open(path,
    "w")`` would, so a box stays readable by the group when the umask allows it.

    Args:
        path: The file to replace; its directory must exist.
        data: The complete new content.

    Raises:
        TypeError: ``data`` is not bytes-like.
        OSError: The temporary file could not be written, synced or renamed.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    path = Path(path)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.filename is None:
            # A failed write or fsync names no file; the user needs to know which.
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename or a creation inside ``directory`` durable, where possible.

    Some platforms and file systems cannot fsync a directory (Windows, some
    network mounts); there the rename is as durable as the system makes it and
    the failure is only logged at debug level, since the new file is already
    in place and raising would misreport the write as failed.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        _log.debug("cannot open %s to fsync it: %s", directory, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        _log.debug("cannot fsync directory %s: %s", directory, exc)
    finally:
        os.close(fd)


def _create_temp(path: Path) -> tuple[int, str]:
    # tempfile.mkstemp would create the file with mode 0o600, ignoring the
    # umask; opening with O_EXCL under a random name gives the same guarantee
    # (a fresh file nobody else writes) with the permissions users expect.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {path}")
