"""The layout of a box on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

META_FILE = "meta.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_SNAPSHOT = "config.yaml"
HEARTBEAT_FILE = "heartbeat"
LOCK_FILE = "writer.lock"
SUBDIRS = ("artifacts", "figures", "logs", "notebooks")
#: Seconds between touches of ``logs/heartbeat`` unless a run chooses otherwise.
DEFAULT_HEARTBEAT_INTERVAL = 10.0


@dataclass(frozen=True)
class ExpPaths:
    """Where each part of one box lives.

    Every path derives from ``root``; nothing inside a box stores an absolute path,
    so a box can be zipped and moved.
    """

    root: Path

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def meta(self) -> Path:
        return self.root / META_FILE

    @property
    def metrics(self) -> Path:
        return self.logs / METRICS_FILE

    @property
    def config_snapshot(self) -> Path:
        return self.artifacts / CONFIG_SNAPSHOT

    @property
    def heartbeat(self) -> Path:
        return self.logs / HEARTBEAT_FILE

    @property
    def lock(self) -> Path:
        return self.logs / LOCK_FILE

    def make_dirs(self) -> None:
        """Create the sub-directories of an already claimed box."""
        for name in SUBDIRS:
            (self.root / name).mkdir(exist_ok=True)
