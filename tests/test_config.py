"""Tests for loading, normalizing and snapshotting configs, and atomic writes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import pytest
import torch

from expbox.atomic import atomic_write_bytes
from expbox.config import load_config, read_config_snapshot, write_config_snapshot
from expbox.normalize import MAX_CONFIG_DEPTH, MAX_CONFIG_VALUES, normalize_config


class Color(enum.Enum):
    RED = "red"
    NESTED = ("a", 1)


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Optim:
    name: str = "adam"
    betas: tuple = (0.9, 0.999)


@dataclasses.dataclass
class Model:
    width: int = 64
    optim: Optim = dataclasses.field(default_factory=Optim)
    root: Path = Path("data/train")


TOKYO = dt.timezone(dt.timedelta(hours=9))

RULES = [
    ("text", "text"),
    (7, 7),
    (1.5, 1.5),
    (True, True),
    (None, None),
    (2**70, 2**70),
    (-(2**70), -(2**70)),
    (Path("data/train.csv"), "data/train.csv"),
    (PurePosixPath("/abs/x"), "/abs/x"),
    (PureWindowsPath("C:\\data\\x"), "C:/data/x"),
    (dt.datetime(2025, 1, 24, 15, 30, tzinfo=TOKYO), "2025-01-24T15:30:00+09:00"),
    (dt.datetime(2025, 1, 24, 15, 30, 5), "2025-01-24T15:30:05"),
    (dt.date(2025, 1, 24), "2025-01-24"),
    (dt.time(15, 30), "15:30:00"),
    (Color.RED, "red"),
    (Color.NESTED, ["a", 1]),
    (Level.HIGH, 3),
    (Optim(), {"name": "adam", "betas": [0.9, 0.999]}),
    (
        Model(),
        {
            "width": 64,
            "optim": {"name": "adam", "betas": [0.9, 0.999]},
            "root": "data/train",
        },
    ),
    ((1, (2, 3)), [1, [2, 3]]),
    ({3, 1, 2}, [1, 2, 3]),
    (frozenset({"b", "a"}), ["a", "b"]),
    ({"b", 1}, [1, "b"]),
    (np.float32(1.5), 1.5),
    (np.float64(0.1), 0.1),
    (np.int64(-4), -4),
    (np.bool_(True), True),
    (np.array(2.5), 2.5),
    (np.str_("s"), "s"),
    (torch.tensor(3), 3),
    (torch.tensor([[0.5]]), 0.5),
    (torch.tensor(1.0, requires_grad=True), 1.0),
    ({1: "one", "two": 2}, {1: "one", "two": 2}),
    ({Color.RED: 1}, {"red": 1}),
    ({np.int64(5): "five"}, {5: "five"}),
]


@pytest.mark.parametrize(("value", "expected"), RULES, ids=lambda v: repr(v)[:40])
def test_normalization_rule(value: Any, expected: Any) -> None:
    """Each supported value becomes its documented stored form with plain types."""
    got = normalize_config({"v": value})["v"]

    assert got == expected
    assert type(got) is type(expected)


def test_normalized_scalars_are_plain_builtins() -> None:
    """NumPy and tensor scalars become exactly int, float or bool, not subclasses."""
    got = normalize_config({"a": np.float64(1.0), "b": Level.HIGH, "c": np.int32(2)})

    assert [type(v) for v in got.values()] == [float, int, int]


def test_non_finite_floats_are_kept() -> None:
    """NaN and infinities are kept as floats."""
    got = normalize_config({"nan": float("nan"), "inf": math.inf, "ninf": -math.inf})

    assert math.isnan(got["nan"])
    assert (got["inf"], got["ninf"]) == (math.inf, -math.inf)


@pytest.mark.parametrize(
    ("config", "key", "kind"),
    [
        ({"model": {"act": lambda x: x}}, "config['model']['act']", "function"),
        ({"w": np.zeros(3)}, "config['w']", "numpy.ndarray"),
        ({"w": torch.zeros(2)}, "config['w']", "torch.Tensor"),
        ({"layers": [1, object()]}, "config['layers'][1]", "object"),
        ({"raw": b"bytes"}, "config['raw']", "bytes"),
        ({3: {"x": print}}, "config[3]['x']", "builtin_function_or_method"),
        ({"s": {1, print}}, "an element of config['s']", "builtin_function"),
    ],
)
def test_refused_values_name_their_key_path(config: dict, key: str, kind: str) -> None:
    """A value that cannot be stored raises TypeError naming its key path and type."""
    with pytest.raises(TypeError) as info:
        normalize_config(config)

    assert key in str(info.value)
    assert kind in str(info.value)


@pytest.mark.parametrize("key", [1.5, None, True, ("a", 1)])
def test_refused_key_types_name_the_mapping(key: Any) -> None:
    """A key other than str or int raises TypeError naming the mapping and key."""
    with pytest.raises(TypeError, match=r"config\['outer'\] has the key"):
        normalize_config({"outer": {key: 1}})


def test_a_config_that_contains_itself_is_refused() -> None:
    """A cycle raises ValueError instead of recursing forever."""
    config: dict = {"a": []}
    config["a"].append(config)

    with pytest.raises(ValueError, match="contains itself"):
        normalize_config(config)


def test_a_repeated_value_is_not_a_cycle() -> None:
    """The same list used twice is stored twice, not mistaken for a cycle."""
    shared = [1, 2]

    assert normalize_config({"a": shared, "b": shared}) == {"a": [1, 2], "b": [1, 2]}


def test_load_none_is_an_empty_config() -> None:
    """config=None gives an empty dict and no source."""
    assert load_config(None) == ({}, None)


def test_load_mapping_normalizes_it() -> None:
    """A mapping is normalized and has no source path."""
    config, source = load_config({"path": Path("a/b"), "t": (1, 2)})

    assert config == {"path": "a/b", "t": [1, 2]}
    assert source is None


def test_load_refuses_other_types() -> None:
    """A config that is neither mapping, path nor None raises TypeError."""
    with pytest.raises(TypeError, match="list"):
        load_config([1, 2])  # type: ignore[arg-type]


def test_load_json_file(tmp_path: Path) -> None:
    """A JSON file loads as its mapping, and the source is the path as given."""
    path = tmp_path / "c.json"
    path.write_text('{"lr": 0.001, "layers": [64, 64], "big": 1180591620717411303424}')

    config, source = load_config(path)

    assert config == {"lr": 0.001, "layers": [64, 64], "big": 2**70}
    assert source == str(path)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".YAML"])
def test_load_yaml_file(tmp_path: Path, suffix: str) -> None:
    """A YAML file loads with its dates as ISO strings and int keys kept."""
    path = tmp_path / f"c{suffix}"
    path.write_text("model:\n  act: relu\n  seed: 1\nday: 2025-01-24\n3: three\n")

    config, source = load_config(str(path))

    assert config == {
        "model": {"act": "relu", "seed": 1},
        "day": "2025-01-24",
        3: "three",
    }
    assert source == str(path)


def test_load_empty_yaml_is_empty(tmp_path: Path) -> None:
    """An empty YAML file is an empty config."""
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")

    assert load_config(path) == ({}, str(path))


def test_missing_file_names_it(tmp_path: Path) -> None:
    """A missing config file raises FileNotFoundError naming it."""
    path = tmp_path / "nope.yaml"

    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(path)


def test_unknown_extension_lists_the_supported_ones(tmp_path: Path) -> None:
    """A config file with another extension raises ValueError listing the valid ones."""
    path = tmp_path / "c.toml"
    path.write_text("a = 1\n")

    with pytest.raises(ValueError, match=r"c\.toml.*\.json, \.yaml, \.yml"):
        load_config(path)


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("bad.json", '{\n  "a": 1,\n  "b": \n}\n', "line 4, column 1"),
        ("bad.yaml", "a: 1\nb: [1, 2\nc: 3\n", "line 3, column 2"),
        ("tab.yaml", "a:\n\tb: 1\n", "line 2, column 1"),
    ],
)
def test_malformed_file_names_file_and_line(
    tmp_path: Path, name: str, text: str, where: str
) -> None:
    """A config file that does not parse raises ValueError naming it and the line."""
    path = tmp_path / name
    path.write_text(text)

    with pytest.raises(ValueError) as info:
        load_config(path)

    assert name in str(info.value)
    assert where in str(info.value)


@pytest.mark.parametrize(
    ("name", "text"),
    [("list.yaml", "- 1\n- 2\n"), ("num.json", "3"), ("n.json", "null")],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, name: str, text: str) -> None:
    """A config file whose top level is not a mapping raises ValueError naming it."""
    path = tmp_path / name
    path.write_text(text)

    with pytest.raises(ValueError, match=f"{name}.*mapping"):
        load_config(path)


def test_unstorable_value_in_a_file_names_its_key(tmp_path: Path) -> None:
    """A YAML float key is refused at load time, naming where it sits."""
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  1.5: x\n")

    with pytest.raises(TypeError, match=r"config\['model'\]"):
        load_config(path)


TRICKY = {
    "strings": ["yes", "no", "on", "null", "~", "1.0", "0x10", "2025-01-24", ""],
    "more": [" lead", "trail ", "multi\nline", "# not a comment", "key: value"],
    "unicode": "データ ✓ é 😀",
    "control": ["a\x00b\x07\t", "\u2028\x85\ufeff", "a\r\nb", "a\n", "  "],
    "yaml11": ["y", "n", "Off", "NULL", "True", "1:20", "012", "0o17", ".inf", "*a"],
    "numbers": [0, -1, 1e-300, 1.7976931348623157e308, 0.1 + 0.2, 2**70, -(2**64)],
    "bools": [True, False, None],
    "empty": {"d": {}, "l": []},
    7: {"nested": [[1, [2, {"deep": "x"}]]]},
}


def test_snapshot_round_trip_is_equal(tmp_path: Path) -> None:
    """What is written to config.yaml reads back equal, tricky strings included."""
    path = tmp_path / "config.yaml"

    write_config_snapshot(path, TRICKY)

    assert read_config_snapshot(path) == TRICKY
    assert list(read_config_snapshot(path)) == list(TRICKY)


def test_snapshot_round_trip_of_every_rule(tmp_path: Path) -> None:
    """Every normalized form, NaN and infinities included, survives the snapshot."""
    config = normalize_config({f"k{i}": value for i, (value, _) in enumerate(RULES)})
    config["nan"], config["inf"] = float("nan"), -math.inf
    path = tmp_path / "config.yaml"

    write_config_snapshot(path, config)
    back = read_config_snapshot(path)

    assert math.isnan(back.pop("nan"))
    assert back.pop("inf") == -math.inf
    del config["nan"], config["inf"]
    assert back == config
    assert back == {f"k{i}": expected for i, (_, expected) in enumerate(RULES)}


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_file_config_round_trips_through_the_snapshot(
    tmp_path: Path, suffix: str
) -> None:
    """A config loaded from a file equals its snapshot read back."""
    path = tmp_path / f"c{suffix}"
    data = {"lr": 0.001, "name": "yes", "sizes": [1, 2], "nested": {"a": None}}
    path.write_text(json.dumps(data))  # JSON is valid YAML too
    config, _ = load_config(path)

    write_config_snapshot(tmp_path / "config.yaml", config)

    assert read_config_snapshot(tmp_path / "config.yaml") == config == data


def test_snapshot_is_readable_yaml_without_aliases(tmp_path: Path) -> None:
    """The snapshot keeps key order and repeats shared values instead of aliasing."""
    shared = {"x": 1}
    path = tmp_path / "config.yaml"

    write_config_snapshot(path, {"b": shared, "a": shared})

    text = path.read_text(encoding="utf-8")
    assert "&" not in text and "*" not in text
    assert text.index("b:") < text.index("a:")


def test_read_snapshot_of_a_list_is_refused(tmp_path: Path) -> None:
    """A snapshot that is not a mapping raises ValueError naming the file."""
    path = tmp_path / "config.yaml"
    path.write_text("- 1\n")

    with pytest.raises(ValueError, match="config.yaml"):
        read_config_snapshot(path)


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_failed_encoding_leaves_the_previous_snapshot(tmp_path: Path) -> None:
    """A snapshot that cannot be encoded leaves the old file whole and no temp file."""
    path = tmp_path / "config.yaml"
    write_config_snapshot(path, {"old": 1})

    with pytest.raises(Exception, match="object"):
        write_config_snapshot(path, {"new": object()})

    assert read_config_snapshot(path) == {"old": 1}
    assert _entries(tmp_path) == ["config.yaml"]


def test_atomic_write_replaces_and_keeps_the_umask_mode(tmp_path: Path) -> None:
    """atomic_write_bytes replaces the content and creates the file as open() would."""
    path = tmp_path / "meta.json"
    path.write_bytes(b"old")
    (tmp_path / "plain").write_bytes(b"")

    atomic_write_bytes(path, b"new")

    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777
    assert _entries(tmp_path) == ["meta.json", "plain"]


def test_atomic_write_refuses_text(tmp_path: Path) -> None:
    """Passing str instead of bytes raises TypeError and writes nothing."""
    with pytest.raises(TypeError, match="bytes"):
        atomic_write_bytes(tmp_path / "x", "text")  # type: ignore[arg-type]

    assert _entries(tmp_path) == []


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_write_error_mid_file_leaves_the_previous_file(tmp_path: Path) -> None:
    """A write that fails half way (file size limit) keeps the old file, no temp."""
    path = tmp_path / "meta.json"
    path.write_bytes(b"old content")
    code = textwrap.dedent(
        """
        import resource, signal, sys
        from expbox.atomic import atomic_write_bytes
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        try:
            atomic_write_bytes(sys.argv[1], b"x" * 100_000)
        except OSError as exc:
            print(type(exc).__name__, exc.errno)
        """
    )

    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OSError")
    assert path.read_bytes() == b"old content"
    assert _entries(tmp_path) == ["meta.json"]


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_killed_writer_never_leaves_a_torn_file(tmp_path: Path) -> None:
    """A process killed while rewriting a file leaves the old or the new one whole."""
    path = tmp_path / "meta.json"
    size = 4_000_000
    code = textwrap.dedent(
        """
        import sys
        from expbox.atomic import atomic_write_bytes
        path, size = sys.argv[1], int(sys.argv[2])
        atomic_write_bytes(path, b"a" * size)
        print("ready", flush=True)
        n = 0
        while True:
            n += 1
            atomic_write_bytes(path, (b"b" if n % 2 else b"a") * size)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(size)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        # Read while the child rewrites: every read sees one whole version.
        for _ in range(20):
            data = path.read_bytes()
            assert data in (b"a" * size, b"b" * size)
    finally:
        child.kill()
        child.wait(timeout=60)

    data = path.read_bytes()
    assert data in (b"a" * size, b"b" * size)
    leftovers = [n for n in _entries(tmp_path) if n != "meta.json"]
    assert all(n.startswith(".meta.json.") and n.endswith(".tmp") for n in leftovers)


def test_import_stays_light() -> None:
    """Importing these modules loads neither yaml, numpy nor torch."""
    code = (
        "import sys, expbox.config, expbox.ids, expbox.sysinfo, expbox.atomic; "
        "print(sorted(m for m in ('yaml', 'numpy', 'torch') if m in sys.modules))"
    )

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _laughs(levels: int) -> str:
    """Return a few hundred bytes of YAML whose aliases expand to 9**levels strings."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_naming_the_file(tmp_path: Path) -> None:
    """A YAML file whose aliases expand past the value limit raises ValueError."""
    path = tmp_path / "laughs.yaml"
    path.write_text(_laughs(9))

    with pytest.raises(ValueError) as info:
        load_config(path)

    assert str(path) in str(info.value)
    assert f"{MAX_CONFIG_VALUES:,} values" in str(info.value)


def test_alias_bomb_is_refused_in_a_child_within_its_timeout(tmp_path: Path) -> None:
    """Refusing the alias bomb does not expand it, so a child finishes promptly."""
    path = tmp_path / "laughs.yaml"
    path.write_text(_laughs(9))
    code = (
        "import sys; from expbox.config import load_config\n"
        "try:\n    load_config(sys.argv[1])\n"
        "except ValueError as exc:\n    print(type(exc).__name__)\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.stdout.strip() == "ValueError", done.stderr


def test_shared_values_count_each_time_they_appear() -> None:
    """A mapping config that repeats one big list too often is over the limit."""
    chunk = list(range(MAX_CONFIG_VALUES // 4))

    normalize_config({"a": chunk, "b": chunk, "c": chunk})
    with pytest.raises(ValueError, match=r"^config holds more than"):
        normalize_config({"a": chunk, "b": chunk, "c": chunk, "d": chunk, "e": chunk})


def test_large_reasonable_config_loads_and_round_trips(tmp_path: Path) -> None:
    """A 100,000-value JSON config loads and is snapshotted."""
    data = {f"run{i}": {"lr": i / 7, "name": f"n{i}", "ok": True} for i in range(25000)}
    path = tmp_path / "big.json"
    path.write_text(json.dumps(data))

    config, _ = load_config(path)
    write_config_snapshot(tmp_path / "config.yaml", config)

    assert config == data
    assert (tmp_path / "config.yaml").read_text().startswith("run0:\n  lr: 0.0\n")


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize("depth", [MAX_CONFIG_DEPTH + 1, 400, 5000, 100_000])
def test_deep_file_is_refused_naming_the_file(
    tmp_path: Path, suffix: str, depth: int
) -> None:
    """A file nested deeper than the limit raises ValueError, not RecursionError."""
    path = tmp_path / f"deep{suffix}"
    path.write_text('{"top": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}")

    with pytest.raises(ValueError) as info:
        load_config(path)

    assert str(path) in str(info.value)
    assert "nested too deeply" in str(info.value)


def test_config_at_the_depth_limit_loads_and_round_trips(tmp_path: Path) -> None:
    """A config exactly MAX_CONFIG_DEPTH levels deep is kept and snapshotted."""
    path = tmp_path / "deep.json"
    path.write_text(
        '{"top": ' + "[" * (MAX_CONFIG_DEPTH - 1) + "]" * (MAX_CONFIG_DEPTH - 1) + "}"
    )

    config, _ = load_config(path)
    write_config_snapshot(tmp_path / "config.yaml", config)

    assert read_config_snapshot(tmp_path / "config.yaml") == config


def test_deep_mapping_config_names_the_key_path() -> None:
    """A deep mapping config raises ValueError naming where it crosses the limit."""
    config: dict = {}
    inner = config
    for _ in range(MAX_CONFIG_DEPTH):
        inner["k"] = {}
        inner = inner["k"]

    with pytest.raises(ValueError, match=r"nested too deeply.*config\['k'\]\['k'\]"):
        normalize_config(config)


def test_deep_shared_value_is_refused() -> None:
    """A shallow alias of a deep part is refused where it nests past the limit."""
    deep: list = []
    inner = deep
    for _ in range(MAX_CONFIG_DEPTH - 2):
        inner.append([])
        inner = inner[0]

    normalize_config({"a": deep})
    with pytest.raises(
        ValueError, match=r"nested too deeply.*\(at config\['b'\]\['c'\]\[0\]"
    ):
        normalize_config({"a": deep, "b": {"c": deep}})


def test_merge_key_bomb_is_refused_naming_the_file(tmp_path: Path) -> None:
    """YAML merge keys that would expand exponentially raise ValueError at once."""
    path = tmp_path / "merge.yaml"
    lines = ["m0: &m0 {a: 1, b: 2, c: 3}"]
    for i in range(1, 9):
        lines.append(f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 9) + "]}")
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(ValueError, match="merge keys") as info:
        load_config(path)

    assert str(path) in str(info.value)


def test_merge_keys_still_work(tmp_path: Path) -> None:
    """An ordinary YAML merge key is expanded as before."""
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {lr: 0.1, bs: 8}\nrun: {<<: *b, bs: 16}\n")

    config, _ = load_config(path)

    assert config["run"] == {"lr": 0.1, "bs": 16}
