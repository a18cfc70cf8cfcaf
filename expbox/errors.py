"""The exceptions expbox raises for domain failures.

Misuse of an argument raises the built-in ``ValueError`` or ``TypeError``; everything
that goes wrong with a box on disk or with the writer derives from ``ExpboxError``.
"""

from __future__ import annotations


class ExpboxError(Exception):
    """Base class of every expbox-specific failure."""


class BoxExistsError(ExpboxError, FileExistsError):
    """An explicit ``exp_id`` names a box that already exists."""


class BoxNotFoundError(ExpboxError, FileNotFoundError):
    """No box with the requested id under the results root."""


class CorruptMetaError(ExpboxError):
    """A ``meta.json`` that cannot be parsed; the file is left untouched."""


class BoxLockedError(ExpboxError):
    """Another live process is already writing this box."""


class WriterError(ExpboxError, OSError):
    """The background writer failed to write or fsync the metrics file.

    Records not yet written are kept; the next ``flush`` retries them.
    """


class MissingDependencyError(ExpboxError, ImportError):
    """An optional dependency is needed for the requested feature."""


class CorruptMetricsError(ExpboxError, ValueError):
    """A line of ``metrics.jsonl`` other than the last is not valid JSON."""
