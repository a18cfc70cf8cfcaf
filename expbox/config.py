"""Load a run's config and snapshot it as YAML.

A config is a mapping or a ``.json``, ``.yaml`` or ``.yml`` file. It is normalized
by the one storage rule of :mod:`expbox.normalize` when it is loaded, before any box
exists, so a value that cannot be stored fails at ``init`` and names its key; the
snapshot in ``artifacts/config.yaml`` reads back equal to what was stored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from expbox.atomic import atomic_write_bytes
from expbox.normalize import (
    MAX_CONFIG_VALUES,
    checked_normalize,
    gc_paused,
    too_deep,
)

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def load_config(
    config: Mapping[Any, Any] | str | os.PathLike[str] | None,
) -> tuple[dict[Any, Any], str | None]:
    """Return the normalized config and its source path as given (or ``None``).

    Args:
        config: A mapping, a path to a ``.json``, ``.yaml`` or ``.yml`` file, or
            ``None`` for an empty config. An empty YAML file is an empty config.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The extension is not supported, the file does not parse
            (the message names the file, line and column), its top level is
            not a mapping, or it holds more than ``MAX_CONFIG_VALUES`` values
            or nests deeper than ``MAX_CONFIG_DEPTH`` levels (the message
            names the file).
        TypeError: ``config`` is of another type, or holds a value that cannot
            be stored (see ``normalize_config``).
    """
    if config is None:
        return {}, None
    if isinstance(config, Mapping):
        return checked_normalize(config, "config", "config"), None
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(
            "config must be a mapping, a path to a JSON or YAML file, or None; "
            f"got {type(config).__name__}"
        )

    source = os.fspath(config)
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ValueError(
            f"config file {source!r} must end with one of {', '.join(CONFIG_SUFFIXES)}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {source!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"config file {source!r} is not UTF-8 text: {exc}") from None

    data = _parse_json(text, source) if suffix == ".json" else _parse_yaml(text, source)
    if data is None and suffix != ".json":
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(
            f"config file {source!r} must hold a mapping at the top level, "
            f"got {type(data).__name__}"
        )
    return checked_normalize(data, "config", f"config file {source!r}"), source


def write_config_snapshot(path: Path, config: Mapping[Any, Any]) -> None:
    """Write ``config`` to ``path`` as YAML, atomically.

    ``config`` should already be normalized (``load_config`` does it); the file
    reads back equal with ``read_config_snapshot``, NaN and infinities included.
    """
    import yaml

    # libyaml's emitter writes a large config several times faster than the
    # pure-Python one; it escapes characters outside the BMP (emoji) as \U...,
    # which read back the same.
    base = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

    class _NoAliasDumper(base):  # type: ignore[valid-type,misc]
        # Anchors and aliases (&id001) would make a snapshot harder to read and
        # edit; a config small enough to snapshot can afford repeating a value.
        def ignore_aliases(self, data: Any) -> bool:
            return True

    with gc_paused():
        text = yaml.dump(
            config,
            Dumper=_NoAliasDumper,
            sort_keys=False,
            allow_unicode=True,
            default_flow_style=False,
        )
    atomic_write_bytes(path, text.encode("utf-8"))


def read_config_snapshot(path: Path) -> dict[Any, Any]:
    """Return the config written by ``write_config_snapshot`` (``{}`` if empty).

    Raises:
        FileNotFoundError: No snapshot at ``path``.
        ValueError: The file is not valid YAML or not a mapping; the message
            names the file.
    """
    data = _parse_yaml(Path(path).read_text(encoding="utf-8"), os.fspath(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"config snapshot {os.fspath(path)!r} holds a "
            f"{type(data).__name__}, not a mapping"
        )
    return data


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise too_deep(f"config file {source!r}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"config file {source!r} is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})"
        ) from None


def _parse_yaml(text: str, source: str) -> Any:
    import yaml

    # The pure-Python loader on purpose: libyaml's composer recurses in C and
    # crashes the interpreter on a file nested some thousands of levels deep.
    class _BoundedLoader(yaml.SafeLoader):
        def flatten_mapping(self, node: Any) -> None:
            # Merge keys (<<: *a) copy entries in the parser itself, so a few
            # nested merges of merges grow exponentially before any value
            # exists to be counted.
            super().flatten_mapping(node)
            if len(node.value) > MAX_CONFIG_VALUES:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"merge keys (<<) expand to more than {MAX_CONFIG_VALUES:,} "
                    "entries",
                    node.start_mark,
                )

    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except RecursionError:
        raise too_deep(f"config file {source!r}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(
            f"config file {source!r} is not valid YAML: {problem}{where}"
        ) from None
