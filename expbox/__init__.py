"""expbox: one directory per experiment, and a logger that never slows the loop.

>>> import expbox as xb
>>> ctx = xb.init(project="demo", config={"lr": 1e-3})   # doctest: +SKIP
>>> ctx.logger.log_metrics({"loss": 0.5}, step=0)        # doctest: +SKIP
>>> xb.save(ctx)                                         # doctest: +SKIP
"""

from __future__ import annotations

from .api import init, load, save
from .context import ExpContext
from .errors import (
    BoxExistsError,
    BoxLockedError,
    BoxNotFoundError,
    CorruptMetaError,
    CorruptMetricsError,
    ExpboxError,
    MissingDependencyError,
    WriterError,
)
from .meta import ExperimentMeta
from .paths import ExpPaths

__version__ = "0.1.0"

__all__ = [
    "BoxExistsError",
    "BoxLockedError",
    "BoxNotFoundError",
    "CorruptMetaError",
    "CorruptMetricsError",
    "ExpContext",
    "ExpPaths",
    "ExpboxError",
    "ExperimentMeta",
    "MissingDependencyError",
    "WriterError",
    "__version__",
    "init",
    "load",
    "save",
]
