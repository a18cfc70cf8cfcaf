"""Read the last step and last values of a metrics file from its end.

Listing many boxes must not cost as much as their runs were long, so the file is
read backwards in growing blocks and reading stops as soon as the wanted keys have
a value. A last line cut short by a crash is noted, not an error: the writer may
have been killed mid-write.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson

from .records import RESERVED, TEXT_TO_NONFINITE

logger = logging.getLogger("expbox")

_FIRST_BLOCK = 8 * 1024
_MAX_BLOCK = 1024 * 1024


@dataclass
class MetricsTail:
    """The end of a metrics file: the last step and the last value of some keys."""

    last_step: int | None = None
    last_time: float | None = None
    values: dict[str, Any] = field(default_factory=dict)
    torn: bool = False
    exists: bool = True


def restore_value(value: Any) -> Any:
    """Turn the strings the file uses for NaN and infinities back into floats."""
    if isinstance(value, str):
        return TEXT_TO_NONFINITE.get(value, value)
    return value


def _lines_from_end(f: BinaryIO, size: int) -> Iterator[tuple[int, bytes]]:
    """The lines of a file from the last to the first, reading blocks backwards.

    Yields ``(offset where the line starts, line)``. The first line is whatever
    follows the last newline (empty when the file ends with one). A line longer
    than a block is put together across reads.
    """
    pos = size
    block = _FIRST_BLOCK
    rest = b""
    while pos > 0:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        chunk = f.read(step) + rest
        lines = chunk.split(b"\n")
        rest = lines[0]
        end = pos + len(chunk)
        for line in reversed(lines[1:]):
            end -= len(line)
            yield end, line
            end -= 1
        block = min(block * 2, _MAX_BLOCK)
    yield 0, rest


def _parse_record(line: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(line)
    except ValueError:
        try:
            # Lines from the writer's fallback encoder (lone surrogates).
            record = json.loads(line)
        except ValueError:
            return None
    return record if isinstance(record, dict) else None


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for binary reading, if it is a regular file.

    It is opened without blocking, so that a FIFO in the place of a box's file is
    refused instead of waiting forever for a writer.

    Raises:
        OSError: it cannot be opened, or it is a directory or another non-file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            code, reason = errno.EISDIR, os.strerror(errno.EISDIR)
            raise OSError(code, reason, os.fspath(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
    except BaseException:
        os.close(fd)
        raise
    return open(fd, "rb")  # noqa: SIM115 - the caller closes it


def read_tail(
    path: str | os.PathLike[str],
    keys: Sequence[str] | None = None,
    *,
    max_bytes: int = 64 * 1024,
) -> MetricsTail:
    """The last step and the last value of ``keys`` in a metrics file.

    The file is read from its end. The last whole record is always found; after it,
    records are read until every key in ``keys`` has a value or the next record
    starts more than ``max_bytes`` from the end, so a key logged rarely may be
    missing from ``values``. With
    ``keys=None`` every key met within ``max_bytes`` is returned, those of the last
    record first. A last line cut short by a crash is skipped and ``torn`` is set;
    any other line that is not a JSON object is skipped as well.

    Missing files give an empty tail with ``exists=False``.

    Raises:
        OSError: the file cannot be read, or is not a regular file (a directory,
            or a FIFO, which is refused rather than waited on).
    """
    tail = MetricsTail()
    wanted = None if keys is None else [k for k in keys if k not in RESERVED]
    try:
        f = open_regular(path)
    except FileNotFoundError:
        tail.exists = False
        return tail
    with f:
        size = f.seek(0, os.SEEK_END)
        found = False
        for start, line in _lines_from_end(f, size):
            if found and size - start > max_bytes:
                break
            is_last_line = start + len(line) == size
            if not line.strip():
                continue
            record = _parse_record(line)
            if record is None:
                if is_last_line:
                    tail.torn = True
                else:
                    logger.debug("skipping a line that is not a record in %s", path)
                continue
            if not found:
                found = True
                step, when = record.get("step"), record.get("time")
                tail.last_step = step if type(step) is int else None
                tail.last_time = when if isinstance(when, (int, float)) else None
            for key, value in record.items():
                if key in RESERVED or key in tail.values:
                    continue
                if wanted is None or key in wanted:
                    tail.values[key] = restore_value(value)
            if wanted is not None and len(tail.values) == len(set(wanted)):
                break
    if wanted is not None:
        tail.values = {k: tail.values[k] for k in wanted if k in tail.values}
    return tail
