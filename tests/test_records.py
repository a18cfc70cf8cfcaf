"""Tests of record snapshots, value conversion and line encoding."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
import torch

from expbox.records import (
    INT_MAX,
    INT_MIN,
    check_step,
    encode_records,
    snapshot_record,
    spell_nonfinite,
)


@pytest.mark.parametrize(
    "value", [0.5, -3, 2**64 - 1, -(2**63), True, False, "text", None, ""]
)
def test_plain_values_are_kept_as_they_are(value):
    """Python numbers, bools, strings and None pass through unchanged."""
    record = snapshot_record({"x": value}, 1.0)

    assert record == {"step": None, "time": 1.0, "x": value}
    assert type(record["x"]) is type(value)


@pytest.mark.parametrize(
    ("value", "expected", "kind"),
    [
        (np.float32(1.5), 1.5, float),
        (np.float64(2.5), 2.5, float),
        (np.int64(7), 7, int),
        (np.uint8(255), 255, int),
        (np.bool_(True), True, bool),
        (np.array(3.25), 3.25, float),
        (np.array(4, dtype=np.int32), 4, int),
        (torch.tensor(0.5), 0.5, float),
        (torch.tensor(9), 9, int),
        (torch.tensor(True), True, bool),
    ],
)
def test_array_scalars_become_python_numbers(value, expected, kind):
    """NumPy scalars, 0-d arrays and scalar tensors are converted to plain values."""
    record = snapshot_record({"x": value}, 1.0)

    assert record["x"] == expected
    assert type(record["x"]) is kind


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        [1.0],
        (1.0,),
        {"a": 1},
        object(),
        b"bytes",
        1 + 2j,
        np.array([1.0, 2.0]),
        np.zeros((1,)),
        torch.ones(2),
        torch.ones(1),
        np.complex64(1 + 1j),
    ],
)
def test_other_values_are_refused_naming_the_key(value):
    """A value that cannot be logged raises TypeError that names the key."""
    with pytest.raises(TypeError, match="'bad'"):
        snapshot_record({"ok": 1.0, "bad": value}, 1.0)


@pytest.mark.parametrize("value", [2**64, INT_MIN - 1, -(2**70)])
def test_ints_beyond_64_bits_are_refused(value):
    """An int that JSON readers cannot hold raises TypeError naming the key."""
    with pytest.raises(TypeError, match="'big'"):
        snapshot_record({"big": value}, 1.0)


def test_int_bounds_are_accepted():
    """The extreme 64-bit values are accepted."""
    assert snapshot_record({"a": INT_MAX, "b": INT_MIN}, 1.0)["a"] == INT_MAX


@pytest.mark.parametrize("key", [0, 1.5, None, ("a",), b"a"])
def test_non_string_names_are_refused(key):
    """A metric name that is not a string raises TypeError."""
    with pytest.raises(TypeError, match="names must be strings"):
        snapshot_record({key: 0.5}, 1.0)


@pytest.mark.parametrize("key", ["step", "time"])
def test_reserved_names_are_refused(key):
    """'step' and 'time' cannot be metric names."""
    with pytest.raises(ValueError, match="reserved"):
        snapshot_record({key: 1}, 1.0)


def test_a_mapping_is_required():
    """A list instead of a mapping raises TypeError."""
    with pytest.raises(TypeError, match="mapping"):
        snapshot_record([("a", 1)], 1.0)  # type: ignore[arg-type]


def test_string_subclass_names_and_values_become_plain_strings():
    """A str subclass name or value is stored as a plain str."""

    class Name(str):
        pass

    record = snapshot_record({Name("a"): Name("v")}, 1.0)

    assert [type(k) for k in record] == [str, str, str]
    assert type(record["a"]) is str


@pytest.mark.parametrize("step", [3, np.int64(4), torch.tensor(5)])
def test_check_step_accepts_integers(step):
    """Python ints, NumPy integers and integer tensors are valid steps."""
    assert check_step(step) == int(step)


@pytest.mark.parametrize("step", [True, 1.5, "3", None])
def test_check_step_refuses_the_rest(step):
    """Bools, floats and strings are not steps."""
    with pytest.raises(TypeError, match="step"):
        check_step(step)


def test_spell_nonfinite_replaces_only_nonfinite_floats():
    """NaN and infinities become their strings, other values stay."""
    record = {"a": math.nan, "b": math.inf, "c": -math.inf, "d": 1.0, "e": None}

    assert spell_nonfinite(record) == {
        "a": "NaN",
        "b": "Infinity",
        "c": "-Infinity",
        "d": 1.0,
        "e": None,
    }


def test_encode_records_writes_one_strict_json_line_per_record():
    """Every record becomes one parsable line; NaN and infinities as strings."""
    records = [
        {"step": 0, "time": 1.0, "a": math.nan, "b": None},
        {"step": 1, "time": 2.0, "s": 'x},{"step":1,\n"'},
        {"step": 2, "time": 3.0},
        {"step": 3, "time": 4.0, "c": -math.inf, "d": math.inf},
    ]

    lines = bytes(encode_records(records)).splitlines()

    assert [orjson.loads(line) for line in lines] == [
        {"step": 0, "time": 1.0, "a": "NaN", "b": None},
        {"step": 1, "time": 2.0, "s": 'x},{"step":1,\n"'},
        {"step": 2, "time": 3.0},
        {"step": 3, "time": 4.0, "c": "-Infinity", "d": "Infinity"},
    ]


def test_encode_records_of_nothing_is_empty():
    """An empty chunk encodes to no bytes at all (no blank line)."""
    assert bytes(encode_records([])) == b""


def test_encode_records_spells_out_lone_surrogates_as_strict_json():
    """A string orjson refuses is written as a line orjson reads back."""
    data = bytes(
        encode_records([{"step": 0, "time": 1.0, "s\udc00": "\ud800", "n": 1e999}])
    )

    assert data.endswith(b"\n")
    assert orjson.loads(data) == {
        "step": 0,
        "time": 1.0,
        "s\\udc00": "\\ud800",
        "n": "Infinity",
    }


@pytest.mark.parametrize(
    "value",
    ["a\ud800b", "\udfff", "\ud83d\ude00", np.str_("x\ud800"), np.array("x\ud800")],
)
def test_lone_surrogates_in_values_are_refused_naming_the_key(value):
    """A string value UTF-8 cannot encode raises TypeError naming its key."""
    with pytest.raises(TypeError, match="'s'.*lone surrogate"):
        snapshot_record({"ok": 1.0, "s": value}, 1.0)


def test_lone_surrogates_in_names_are_refused():
    """A metric name UTF-8 cannot encode raises TypeError naming it."""
    with pytest.raises(TypeError, match=r"name holds the lone surrogate"):
        snapshot_record({"loss\ud800": 1.0}, 1.0)


def test_non_ascii_text_is_kept():
    """Text beyond ASCII, emoji included, is logged unchanged."""
    record = snapshot_record({"phase": "entraînement 🚀", "é": "ü"}, 1.0)

    assert record["phase"] == "entraînement 🚀" and record["é"] == "ü"
