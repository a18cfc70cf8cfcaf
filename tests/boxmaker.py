"""Boxes written straight to disk, as the file logger leaves them, for tests."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

HOST = socket.gethostname()


def make_box(
    root: Path,
    exp_id: str,
    *,
    records: list[dict[str, Any]] | None = None,
    tail: str = "",
    **meta: Any,
) -> Path:
    """Write a box the way the file logger leaves it on disk."""
    box = root / exp_id
    for sub in ("artifacts", "figures", "logs", "notebooks"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    data = {
        "schema": 1,
        "exp_id": exp_id,
        "project": "demo",
        "title": f"run {exp_id}",
        "purpose": "",
        "status": "finished",
        "created_at": "2026-01-01T10:00:00.000+00:00",
        "finished_at": "2026-01-01T10:30:00.000+00:00",
        "system": {"host": HOST, "pid": os.getpid()},
        "heartbeat_interval": 10.0,
        "extra": {},
    }
    data.update(meta)
    (box / "meta.json").write_text(json.dumps(data))
    if records is not None:
        lines = [json.dumps(r) + "\n" for r in records]
        (box / "logs" / "metrics.jsonl").write_text("".join(lines) + tail)
    return box
