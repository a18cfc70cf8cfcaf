"""Validation of ids and names that become one path component."""

from __future__ import annotations

_FORBIDDEN = ("/", "\\", "\x00")
#: Bytes in a name; file systems allow 255, and expbox appends counters and
#: temporary suffixes to names.
MAX_NAME_BYTES = 200


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is safe as a single path component.

    Args:
        value: The candidate id, prefix, suffix or file name.
        what: The argument's name, used in the error message.

    Raises:
        TypeError: ``value`` is not a string.
        ValueError: ``value`` is empty, longer than ``MAX_NAME_BYTES`` in UTF-8,
            contains ``/``, ``\\``, NUL or another control character, is ``..`` or
            starts with a dot.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    for bad in _FORBIDDEN:
        if bad in value:
            raise ValueError(
                f"{what}={value!r} contains {bad!r}; it must be one path component"
            )
    bad = next((c for c in value if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise ValueError(
            f"{what}={value!r} contains the control character {bad!r}; names are "
            "shown in listings and terminals"
        )
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise ValueError(
            f"{what} is {size} bytes long in UTF-8; at most {MAX_NAME_BYTES} fit a "
            "file name"
        )
    if value.startswith("."):
        raise ValueError(f"{what}={value!r} must not start with a dot")
    if value != value.strip():
        raise ValueError(f"{what}={value!r} must not start or end with white space")
    return value
