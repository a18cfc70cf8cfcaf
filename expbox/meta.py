"""``ExperimentMeta`` and the atomic reading and writing of ``meta.json``."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import orjson

from .atomic import atomic_write_bytes
from .errors import CorruptMetaError

SCHEMA_VERSION = 1
STATUSES = ("running", "finished", "failed", "terminated")


def now_iso() -> str:
    """The current local time in ISO 8601 with its UTC offset, to the millisecond."""
    return _dt.datetime.now().astimezone().isoformat(timespec="milliseconds")


@dataclass
class ExperimentMeta:
    """Everything ``meta.json`` holds about one box.

    The fields mirror the file's top-level keys. ``extra`` is free-form and belongs to
    the user and the backends; keys this version does not know are kept in
    ``unknown`` and written back unchanged, so an older expbox never drops what a
    newer one wrote.
    """

    exp_id: str
    project: str
    title: str = ""
    purpose: str = ""
    status: str = "running"
    created_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    config_path: str | None = None
    config_snapshot: str | None = "artifacts/config.yaml"
    logger: str = "file"
    env_note: str | None = None
    final_note: str | None = None
    error: dict[str, str] | None = None
    system: dict[str, Any] = field(default_factory=dict)
    distributed: dict[str, Any] = field(default_factory=dict)
    heartbeat_interval: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION
    unknown: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping, in the order the file shows it."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        unknown = data.pop("unknown")
        schema = data.pop("schema")
        return {"schema": schema, **data, **unknown}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentMeta:
        """Build from a parsed ``meta.json``; unknown keys are kept aside."""
        names = {f.name for f in dataclasses.fields(cls)} - {"unknown"}
        known = {k: v for k, v in data.items() if k in names}
        unknown = {k: v for k, v in data.items() if k not in names}
        if "exp_id" not in known or "project" not in known:
            raise KeyError("exp_id and project are required")
        return cls(**known, unknown=unknown)


def _json_default(value: Any) -> Any:
    """Encode the few non-JSON types users put in ``extra`` by the config rule."""
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if not isinstance(value, tuple) else list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (ValueError, RuntimeError):
            pass
    raise TypeError(f"cannot store a {type(value).__name__} in meta.json")


def encode_meta(meta: ExperimentMeta) -> bytes:
    """Serialize to indented JSON; raises ``TypeError`` before anything is written."""
    options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
    return orjson.dumps(meta.to_dict(), default=_json_default, option=options)


def write_meta(path: Path, meta: ExperimentMeta) -> None:
    """Write ``meta.json`` atomically: a reader sees the old file or the new one.

    The whole document is encoded first, so a value that cannot be encoded raises
    and the previous file stays as it was.
    """
    if meta.status not in STATUSES:
        raise ValueError(f"status={meta.status!r} is not one of {', '.join(STATUSES)}")
    atomic_write_bytes(Path(path), encode_meta(meta))


def read_meta(path: str | os.PathLike[str]) -> ExperimentMeta:
    """Read ``meta.json``.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptMetaError: the file is not a JSON object with ``exp_id`` and
            ``project``; it is left exactly as it was.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise TypeError("top level is not an object")
        return ExperimentMeta.from_dict(data)
    except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
        raise CorruptMetaError(f"{path} is not a valid meta.json: {exc}") from exc
