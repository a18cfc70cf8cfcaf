"""Read the records of ``logs/metrics.jsonl`` back, streaming.

NaN and infinities are stored as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"``; the reader turns exactly those strings back into floats (so a
*string* metric equal to one of them also reads back as a float). pandas is imported
only by :func:`to_pandas`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, Optional, Union

import orjson

from .errors import CorruptMetricsError, MissingDependencyError
from .records import RESERVED, TEXT_TO_NONFINITE

__all__ = ["read_columns", "read_records", "to_pandas"]

PathLike = Union[str, "os.PathLike[str]"]

_NONFINITE_MARKS = (b'"NaN"', b'Infinity"')
# Every line the writer writes starts like this; a torn one is a prefix of a line.
_RECORD_START = b'{"step":'


def read_records(
    path: PathLike, keys: Optional[Iterable[str]] = None, *, strict: bool = False
) -> Iterator[dict[str, Any]]:
    """Yield the records of a metrics file one at a time, in file order.

    Args:
        path: A ``metrics.jsonl`` file.
        keys: Metric names to keep; ``step`` and ``time`` are always kept. A
            record holding none of them is still yielded, with step and time.
        strict: Raise on a torn line instead of skipping it.

    A torn line (the process was killed in the middle of a write) is skipped with
    one warning: the last line when it has no newline, or a line that starts like
    a record but does not parse (a run resumed after a kill starts on a new line).

    Raises:
        CorruptMetricsError: a line is not valid JSON and is not a torn record
            (or ``strict`` is true); the message gives the line number and file.
    """
    wanted = None if keys is None else frozenset(keys).union(RESERVED)
    torn = 0
    with open(path, "rb") as file:
        lineno = 0
        for lineno, line in enumerate(file, 1):  # noqa: B007 - used after the loop
            record = _parse(line)
            if record is None:
                if line.isspace():
                    continue
                last = not line.endswith(b"\n")
                if strict or not (last or line.startswith(_RECORD_START)):
                    raise CorruptMetricsError(
                        f"line {lineno} of {os.fspath(path)} is not a valid record: "
                        f"{line[:80]!r}"
                    )
                torn += 1
                continue
            if wanted is not None:
                record = {k: v for k, v in record.items() if k in wanted}
            yield record
    if torn:
        warnings.warn(
            f"expbox: skipped {torn} torn line(s) in {os.fspath(path)} (a process "
            f"was killed while writing); the other records are complete",
            RuntimeWarning,
            stacklevel=2,
        )


def read_columns(
    path: PathLike, keys: Optional[Iterable[str]] = None
) -> dict[str, list[Any]]:
    """Return the records as columns, one list per name, all the same length.

    A record without a name gets None in that column; a NaN stays a float NaN, so
    "not logged" and "logged as NaN" remain distinct.
    """
    columns: dict[str, list[Any]] = {}
    for rows, record in enumerate(read_records(path, keys), 1):
        for key, value in record.items():
            column = columns.get(key)
            if column is None:
                column = columns[key] = [None] * (rows - 1)
            column.append(value)
        for column in columns.values():
            if len(column) < rows:
                column.append(None)
    return columns


def to_pandas(path: PathLike, keys: Optional[Iterable[str]] = None) -> Any:
    """Return the records as a pandas DataFrame, one row per record.

    Missing values follow pandas' rules (NaN in a numeric column); use
    :func:`read_columns` to tell "not logged" from NaN.

    Raises:
        MissingDependencyError: pandas is not installed.
    """
    try:
        import pandas as pd
    except ImportError as exc:
        raise MissingDependencyError(
            "to_pandas needs pandas; install it with `pip install pandas` "
            "(or `pip install expbox[pandas]`)"
        ) from exc
    return pd.DataFrame(read_columns(path, keys))


def _parse(line: bytes) -> Optional[dict[str, Any]]:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            # Lines written by the fallback encoder (escaped lone surrogates).
            record = json.loads(line)
        except ValueError:
            return None
    if type(record) is not dict:
        return None
    if _NONFINITE_MARKS[0] in line or _NONFINITE_MARKS[1] in line:
        for key, value in record.items():
            if type(value) is str and value in TEXT_TO_NONFINITE:
                record[key] = TEXT_TO_NONFINITE[value]
    return record
