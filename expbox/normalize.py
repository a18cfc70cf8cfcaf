"""The one rule by which expbox stores a config: plain YAML and JSON types only.

``normalize_config`` runs when a config is loaded, before any box exists, so a
value that cannot be stored fails at ``init`` and names its key:

- ``str``, ``int`` (any size), ``float`` (NaN and infinities too), ``bool`` and
  ``None`` are kept; subclasses become the plain built-in type.
- ``pathlib`` paths become their POSIX string; other path-like objects become
  ``os.fspath(value)``.
- An aware ``datetime`` becomes an ISO 8601 string with its offset; a naive one
  an ISO string without offset (it is not converted to any zone). ``date`` and
  ``time`` become ISO strings.
- An ``Enum`` member becomes its value, normalized again.
- A dataclass instance becomes a dict of its fields; any mapping becomes a dict.
- Tuples and lists become lists; sets and frozensets become sorted lists (mixed
  types are ordered by type name, then value).
- NumPy scalars, 0-d arrays and one-element tensors become ``.item()``.
- Mapping keys: ``str`` is kept and ``int`` (NumPy integers too) is kept as an
  int, which YAML gives back; an ``Enum`` key becomes its value; any other key
  (``bool``, ``float``, ``None``, a tuple) is refused.
- Anything else (functions, multi-element arrays, bytes, arbitrary objects)
  raises ``TypeError`` naming the key path, e.g. ``config['model']['act']``.

Two limits keep a hostile or mistaken config from hanging ``init``: at most
``MAX_CONFIG_VALUES`` values, counting every mapping, list and scalar once per
place it appears (a YAML alias or a Python object used twice counts twice,
because the stored config repeats it), and at most ``MAX_CONFIG_DEPTH`` levels
of nested mappings and lists. Both are checked before anything is converted, on
the shared structure, so a small file whose aliases would expand to billions
of values is refused at once with a ``ValueError`` naming the file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import gc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import PurePath
from typing import Any

#: Most values a config may hold, aliases expanded (see the module doc).
MAX_CONFIG_VALUES = 1_000_000
#: Most levels of mappings and lists a config may nest (the top mapping is 1).
MAX_CONFIG_DEPTH = 100

_PLAIN_SCALARS = (bool, int, float, type(None))


def normalize_config(value: Any, key: str = "config") -> Any:
    """Return ``value`` in the form expbox stores, by the rule in this module's doc.

    Args:
        value: A config or any value inside one.
        key: How to name ``value`` in an error, e.g. ``"config['model']"``.

    Raises:
        TypeError: A value or a mapping key that cannot be stored; the message
            names its key path and type.
        ValueError: A container that contains itself, a string that cannot
            be encoded as UTF-8, more than ``MAX_CONFIG_VALUES`` values, or
            more than ``MAX_CONFIG_DEPTH`` levels of nesting.
    """
    return checked_normalize(value, key, key)


def checked_normalize(value: Any, key: str, what: str) -> Any:
    """Check the limits on ``value`` (naming it ``what``), then normalize it."""
    _check_limits(value, key, what)
    with gc_paused():
        return _normalize(value, key, set())


@contextmanager
def gc_paused() -> Iterator[None]:
    # Building a large config allocates many containers and would trigger
    # repeated full collections that find nothing; pausing the collector for
    # the duration makes a big config about a third faster.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _TooDeep(Exception):
    """Raised inside ``_measure``; collects the key path while it unwinds."""

    def __init__(self) -> None:
        super().__init__()
        self.path: list[Any] = []


def _check_limits(value: Any, key: str, what: str) -> None:
    """Raise ValueError when ``value`` is over ``MAX_CONFIG_VALUES`` or too deep.

    Sizes of containers met before are remembered by identity, so a structure
    that shares itself (YAML aliases) costs its distinct containers only.
    """
    sizes: dict[int, tuple[int, int]] = {}
    try:
        count, _ = _measure(value, sizes, set(), 1)
    except _TooDeep as exc:
        at = key + "".join(f"[{k!r}]" for k in reversed(exc.path))
        raise too_deep(what, at) from None
    if count > MAX_CONFIG_VALUES:
        raise ValueError(
            f"{what} holds more than {MAX_CONFIG_VALUES:,} values, counting a "
            "repeated (YAML alias) part each time it appears; expbox refuses it "
            "so that init stays fast. Keep bulk data in a file and put its path "
            "in the config"
        )


def too_deep(what: str, at: str | None = None) -> ValueError:
    where = f" (at {at})" if at else ""
    return ValueError(
        f"{what} is nested too deeply: expbox accepts at most {MAX_CONFIG_DEPTH} "
        f"levels of mappings and lists{where}"
    )


def _measure(
    value: Any, sizes: dict[int, tuple[int, int]], active: set[int], depth: int
) -> tuple[int, int]:
    """Return how many values ``value`` expands to and how deep it nests.

    Mirrors the containers ``_normalize`` walks into; everything else counts
    as one value. A container met again inside itself counts as one, so that
    ``_normalize`` can report the cycle with its key path.
    """
    kind = type(value)
    if kind is dict or kind is list or kind is tuple:
        pass
    elif isinstance(value, enum.Enum):
        return _measure(value.value, sizes, active, depth)
    elif not isinstance(value, (Mapping, list, tuple, set, frozenset)) and not (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    ):
        return 1, 0

    known = sizes.get(id(value))
    if known is None and id(value) in active:
        return 1, 0
    if known is None:
        if depth > MAX_CONFIG_DEPTH:
            raise _TooDeep()
        active.add(id(value))
        count, height = 1, 1
        for v in _children(value):
            if type(v) is str or type(v) in _PLAIN_SCALARS:
                count += 1
                continue
            try:
                n, h = _measure(v, sizes, active, depth + 1)
            except _TooDeep as exc:
                exc.path.append(_key_of(value, v))
                raise
            count += n
            height = max(height, h + 1)
            if count > MAX_CONFIG_VALUES:
                break
        active.discard(id(value))
        known = sizes[id(value)] = (count, height)
    elif depth - 1 + known[1] > MAX_CONFIG_DEPTH:
        # A shared container seen before at a shallower place; re-walk it
        # only to find the key path that crosses the limit.
        sizes.pop(id(value))
        return _measure(value, sizes, active, depth)
    return known


def _children(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value.values()
    if isinstance(value, (list, tuple, set, frozenset)):
        return value
    return (getattr(value, f.name) for f in dataclasses.fields(value))


def _key_of(container: Any, child: Any) -> Any:
    """Return the key or index under which ``child`` sits (only for messages)."""
    if isinstance(container, Mapping):
        pairs: Any = container.items()
    elif isinstance(container, (list, tuple)):
        pairs = enumerate(container)
    elif isinstance(container, (set, frozenset)):
        return "an element"
    else:
        pairs = (
            (f.name, getattr(container, f.name)) for f in dataclasses.fields(container)
        )
    return next(k for k, v in pairs if v is child)


def _normalize(value: Any, key: str, active: set[int]) -> Any:
    # The order matters: bool before int, Enum before its mixed-in base type,
    # datetime before date, and exact built-ins first because they are the
    # common case.
    kind = type(value)
    if value is None or kind in (bool, int, float):
        return value
    if kind is str:
        return _check_utf8(value, key)
    if isinstance(value, enum.Enum):
        return _normalize(value.value, key, active)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return _check_utf8(str.__str__(value), key)
    if isinstance(value, PurePath):
        return _check_utf8(value.as_posix(), key)
    if isinstance(value, os.PathLike):
        return _normalize(os.fspath(value), key, active)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if _is_array_like(value):
        return _normalize(_item(value, key), key, active)

    if id(value) in active:
        raise ValueError(f"{key} contains itself; a config must be a tree")
    active.add(id(value))
    try:
        return _normalize_container(value, key, active)
    finally:
        active.discard(id(value))


def _normalize_container(value: Any, key: str, active: set[int]) -> Any:
    if isinstance(value, Mapping):
        items = value.items()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    elif isinstance(value, (list, tuple)):
        return [
            v if type(v) in _PLAIN_SCALARS else _normalize(v, f"{key}[{i}]", active)
            for i, v in enumerate(value)
        ]
    elif isinstance(value, (set, frozenset)):
        element = f"an element of {key}"
        return _sorted([_normalize(v, element, active) for v in value])
    else:
        raise TypeError(
            f"{key} has type {_type_name(value)}, which a config cannot store; use "
            "a str, number, bool, None, list or dict (or a path, datetime, Enum "
            "or dataclass)"
        )

    result: dict[Any, Any] = {}
    for k, v in items:
        stored = _check_key(k, key)
        if stored in result:
            raise ValueError(f"{key} has two keys that are both stored as {stored!r}")
        if type(v) in _PLAIN_SCALARS:
            result[stored] = v
        else:
            result[stored] = _normalize(v, f"{key}[{stored!r}]", active)
    return result


def _check_key(k: Any, key: str) -> Any:
    if type(k) is str:
        return _check_utf8(k, key)
    if type(k) is int:
        return k
    if isinstance(k, enum.Enum):
        return _check_key(k.value, key)
    if isinstance(k, str):
        return _check_utf8(str.__str__(k), key)
    if isinstance(k, int) and not isinstance(k, bool):
        return int.__int__(k)
    if _is_array_like(k) and getattr(k, "ndim", None) == 0:
        item = k.item()
        if type(item) is int:
            return item
    raise TypeError(
        f"{key} has the key {k!r} of type {_type_name(k)}; config keys must be "
        "str or int (in YAML, quote keys such as yes, on or 1.5)"
    )


def _check_utf8(text: str, key: str) -> str:
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{key} holds a string that is not valid text: {exc}"
        ) from None
    return text


def _is_array_like(value: Any) -> bool:
    module = type(value).__module__ or ""
    return (module == "numpy" or module.startswith(("numpy.", "torch"))) and hasattr(
        value, "item"
    )


def _item(value: Any, key: str) -> Any:
    # NumPy scalars and 0-d arrays have ndim == 0; tensors are accepted with
    # exactly one element, whatever their shape.
    if type(value).__module__.startswith("torch"):
        numel = value.numel() if hasattr(value, "numel") else None
        if numel == 1:
            return value.item()
        shape = tuple(getattr(value, "shape", ()))
    else:
        if getattr(value, "ndim", 0) == 0:
            return value.item()
        shape = tuple(value.shape)
    raise TypeError(
        f"{key} has type {_type_name(value)} and shape {shape}; a config stores "
        "only scalars, convert it with .tolist() if a list is meant"
    )


def _sorted(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=lambda v: (type(v).__name__, repr(v)))


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    return (
        kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    )
