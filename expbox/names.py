"""Validation of ids and names that become one path component."""

from __future__ import annotations

_FORBIDDEN = ("/", "\\", "\x00")


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is safe as a single path component.

    Args:
        value: The candidate id, prefix, suffix or file name.
        what: The argument's name, used in the error message.

    Raises:
        TypeError: ``value`` is not a string.
        ValueError: ``value`` is empty, contains ``/``, ``\\`` or NUL, is ``..``
            or starts with a dot.
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
    if value.startswith("."):
        raise ValueError(f"{what}={value!r} must not start with a dot")
    if value != value.strip():
        raise ValueError(f"{what}={value!r} must not start or end with white space")
    return value
