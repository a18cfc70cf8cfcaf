"""Snapshot and validate one record on the caller's thread.

A record is the dict that becomes one line of ``metrics.jsonl``:
``{"step": s, "time": t, **metrics}``. The logger checks the common case (plain
floats, ASCII strings, bools and None under known names) cheaply and falls back to
:func:`snapshot_record`, which converts NumPy scalars, 0-d arrays and scalar tensors
to Python numbers and refuses everything else with a ``TypeError`` naming the key.
Nothing here imports NumPy or torch: their values are recognised by the module that
defines their type.
"""

from __future__ import annotations

import json
import logging
import math
import operator
from collections.abc import Mapping
from typing import Any

import orjson

#: Names every line carries; a metric may not use them.
RESERVED = ("step", "time")

log = logging.getLogger("expbox")

#: Value types that need no conversion and no check. ``int`` is not here: an int
#: must fit the 64 bits orjson writes. Nor is ``str``: a lone surrogate cannot be
#: written as UTF-8, so only ASCII text (``str.isascii`` is O(1)) passes unchecked.
FAST_TYPES = frozenset({float, bool, type(None)})

#: The range of integers orjson can write (signed and unsigned 64-bit).
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

#: How non-finite floats are spelled on disk, so every line is strict JSON.
NONFINITE_TO_TEXT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
TEXT_TO_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

_ARRAY_MODULES = ("numpy", "torch", "jax", "jaxlib")


def snapshot_record(metrics: Mapping[Any, Any], now: float) -> dict[str, Any]:
    """Return ``{"step": None, "time": now, **metrics}`` with every value converted.

    The step is filled in by the logger. The whole record is refused if one key or
    value is refused, so a bad call logs nothing.

    Raises:
        TypeError: ``metrics`` is not a mapping, a key is not a string, a value is
            not a number, bool, string, None, NumPy scalar, 0-d array or scalar
            tensor, or a key or string value holds a lone surrogate.
        ValueError: a key is ``"step"`` or ``"time"``.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"metrics must be a mapping of name to value, got {type(metrics).__name__}"
        )
    record: dict[str, Any] = {"step": None, "time": now}
    for key, value in metrics.items():
        if type(key) is not str:
            if not isinstance(key, str):
                raise TypeError(
                    f"metric names must be strings, got {type(key).__name__} "
                    f"key {key!r}"
                )
            key = str(key)
        if not key.isascii():
            _check_text(key, key, "name")
        if key in RESERVED:
            raise ValueError(
                f"{key!r} is a reserved name (every record carries 'step' and "
                f"'time'); pass the step as log_metrics(..., step=...) or rename "
                f"the metric"
            )
        record[key] = convert_value(key, value)
    return record


def convert_value(key: str, value: Any) -> Any:
    """Return ``value`` as a plain float, int, bool, str or None.

    Raises:
        TypeError: the value cannot be logged; the message names ``key``.
    """
    kind = type(value)
    if kind in FAST_TYPES:
        return value
    if kind is str:
        return value if value.isascii() else _check_text(key, value, "value")
    if kind is int:
        return _check_int(key, value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return _check_int(key, int(value))
    if isinstance(value, str):
        return _check_text(key, str(value), "value")
    if kind.__module__.partition(".")[0] in _ARRAY_MODULES:
        return _convert_array_scalar(key, value)
    raise TypeError(
        f"metric {key!r} has a value of type {_type_name(value)}, which cannot be "
        f"logged; log numbers, bools, strings or None (one value per name)"
    )


def check_step(step: Any) -> int:
    """Return ``step`` as an int (NumPy integers and integer tensors accepted).

    Raises:
        TypeError: ``step`` is a bool or not an integer.
        ValueError: ``step`` does not fit in 64 bits.
    """
    if isinstance(step, bool):
        raise TypeError("step must be an integer, got bool")
    try:
        value = operator.index(step)
    except TypeError:
        raise TypeError(
            f"step must be an integer, got {_type_name(step)} {step!r}"
        ) from None
    if not INT_MIN <= value <= INT_MAX:
        shown = value if value.bit_length() < 256 else f"<{value.bit_length()}-bit int>"
        raise ValueError(f"step={shown} does not fit in 64 bits")
    return value


def spell_nonfinite(record: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``record`` with NaN and infinities as their JSON strings."""
    return {
        key: _spell(value)
        if type(value) is float and not math.isfinite(value)
        else value
        for key, value in record.items()
    }


def _spell(value: float) -> str:
    return NONFINITE_TO_TEXT[repr(value)]


def _check_int(key: str, value: int) -> int:
    if INT_MIN <= value <= INT_MAX:
        return value
    raise TypeError(
        f"metric {key!r} is an int outside the 64-bit range JSON readers accept "
        f"({value}); log it as a float or a string"
    )


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8, i.e. holds no lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(key: str, text: str, what: str) -> str:
    """Return ``text`` if it has no lone surrogate, which UTF-8 cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TypeError(
            f"metric {key!r}: its {what} holds the lone surrogate "
            f"{text[exc.start]!r} at index {exc.start}, which a JSON line cannot "
            f"hold; decode such text with errors='replace' before logging it"
        ) from None
    return text


def _convert_array_scalar(key: str, value: Any) -> Any:
    # NumPy scalars have ndim 0 too; torch tensors expose dim() and ndim.
    ndim = getattr(value, "ndim", None)
    item = getattr(value, "item", None)
    if ndim != 0 or item is None:
        shape = getattr(value, "shape", None)
        raise TypeError(
            f"metric {key!r} is a {_type_name(value)} of shape {tuple(shape or ())}, "
            f"not a scalar; log one number per name (e.g. x.item() or x.mean())"
        )
    # .item() copies the number out: no reference to the array or tensor is kept,
    # and a later in-place change cannot alter what was logged.
    plain = item()
    if type(plain) is int:
        return _check_int(key, plain)
    if type(plain) is str:
        return _check_text(key, plain, "value")
    if type(plain) not in FAST_TYPES:
        raise TypeError(
            f"metric {key!r} holds a {type(plain).__name__} "
            f"({_type_name(value)}), which cannot be logged"
        )
    return plain


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{module}.{kind.__qualname__}"


def encode_records(records: list[dict[str, Any]]) -> memoryview:
    """Return ``records`` as JSON lines, NaN and infinities spelled as strings.

    Every record starts with its ``"step"`` key and holds no nested object, so in
    the encoded list ``},{"step":`` occurs only between records (a quote inside a
    string is escaped). One ``dumps`` of the whole chunk is much cheaper than one
    per record, whose many short-lived buffers stress the allocator. A small last
    record turns the final separator into the last newline, and is cut off with
    the brackets without copying.
    """
    if not records:
        return memoryview(b"")
    try:
        data = orjson.dumps([*records, _END])
    except Exception:
        # One odd record must not cost the chunk: encode each on its own.
        return memoryview(b"".join(_encode_slow(r) for r in records))
    # orjson writes non-finite floats as null; only then do records need a look.
    if b"null" in data:
        fixed = [spell_nonfinite(r) if _has_nonfinite(r) else r for r in records]
        data = orjson.dumps([*fixed, _END])
    return memoryview(data.replace(_BETWEEN, _BETWEEN_LINES))[1:-_END_SIZE]


_END = {"step": 0}
_END_SIZE = len(b'{"step":0}]')
_BETWEEN = b'},{"step":'
_BETWEEN_LINES = b'}\n{"step":'


def _has_nonfinite(record: dict[str, Any]) -> bool:
    return any(
        type(v) is float and (v != v or v in (math.inf, -math.inf))
        for v in record.values()
    )


def _encode_slow(record: dict[str, Any]) -> bytes:
    record = spell_nonfinite(record)
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except (TypeError, orjson.JSONEncodeError):
        pass
    # Checked records never get here; if one does, keep the line and say so
    # rather than lose the batch it came with. json would escape a lone surrogate
    # as \udXXX, which strict readers such as orjson refuse: spell it out instead.
    log.debug("a record could not be encoded: %r", record)
    try:
        readable = {_readable(k): _readable(v) for k, v in record.items()}
        return orjson.dumps(readable, option=orjson.OPT_APPEND_NEWLINE)
    except (TypeError, orjson.JSONEncodeError):
        safe = {
            _readable(k): v if k in RESERVED else repr(v)[:200]
            for k, v in record.items()
        }
        safe["step"] = repr(record.get("step"))[:40]
        return json.dumps(safe).encode() + b"\n"


def _readable(value: Any) -> Any:
    """A string with each lone surrogate written as a backslash escape."""
    if type(value) is str:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value
