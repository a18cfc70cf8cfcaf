"""Tests of reading metrics files back: torn lines, corruption, columns, pandas."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import pytest

from expbox.errors import CorruptMetricsError
from expbox.loggers import FileLogger
from expbox.paths import ExpPaths
from expbox.reader import read_columns, read_records, to_pandas

GOOD = b'{"step":0,"time":1.0,"a":1.5}\n{"step":1,"time":2.0,"a":"NaN","b":2}\n'


@pytest.fixture
def metrics(tmp_path):
    return tmp_path / "metrics.jsonl"


def test_records_come_back_in_order_with_nonfinite_floats(metrics):
    """Records stream back in file order; the NaN string becomes a float."""
    metrics.write_bytes(
        GOOD + b'{"step":2,"time":3.0,"c":"Infinity","d":"-Infinity"}\n'
    )

    records = list(read_records(metrics))

    assert [r["step"] for r in records] == [0, 1, 2]
    assert math.isnan(records[1]["a"])
    assert records[2]["c"] == math.inf and records[2]["d"] == -math.inf


def test_a_string_metric_spelled_like_nan_reads_back_as_a_float(tmp_path):
    """The documented ambiguity: the string "NaN" comes back as float NaN."""
    paths = ExpPaths(tmp_path)
    log = FileLogger(paths, exp_id="t")
    log.log_metrics(label="NaN", other="nan")
    log.close()

    (record,) = read_records(paths.metrics)
    assert math.isnan(record["label"]) and record["other"] == "nan"


def test_a_torn_last_line_is_skipped_with_one_warning(metrics):
    """A last line without newline that does not parse is skipped and reported."""
    metrics.write_bytes(GOOD + b'{"step":2,"time":3.0,"a":')

    with pytest.warns(RuntimeWarning, match="torn") as caught:
        records = list(read_records(metrics))

    assert [r["step"] for r in records] == [0, 1]
    assert len(caught) == 1


def test_strict_mode_refuses_a_torn_last_line(metrics):
    """strict=True raises on a torn last line instead of skipping it."""
    metrics.write_bytes(GOOD + b'{"step":2,"time":3.0,"a":')

    with pytest.raises(CorruptMetricsError, match="line 3"):
        list(read_records(metrics, strict=True))


def test_a_corrupt_middle_line_raises_with_its_number_and_path(metrics):
    """An unparsable line in the middle is an error naming the line and the file."""
    metrics.write_bytes(GOOD + b"garbage here\n" + GOOD)

    with pytest.raises(CorruptMetricsError) as info:
        list(read_records(metrics))

    assert "line 3" in str(info.value) and str(metrics) in str(info.value)


def test_a_torn_record_in_the_middle_after_a_resume_is_skipped(metrics):
    """A record torn by a kill, then followed by resumed lines, is skipped."""
    metrics.write_bytes(GOOD + b'{"step":2,"ti\n{"step":2,"time":4.0,"a":3}\n')

    with pytest.warns(RuntimeWarning, match="torn"):
        steps = [r["step"] for r in read_records(metrics)]

    assert steps == [0, 1, 2]


def test_a_file_without_a_torn_line_gives_no_warning(metrics):
    """A whole file reads without any warning."""
    metrics.write_bytes(GOOD)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(read_records(metrics))) == 2


def test_keys_keep_only_the_named_metrics_and_step_and_time(metrics):
    """keys= keeps step, time and the chosen names."""
    metrics.write_bytes(GOOD)

    records = list(read_records(metrics, keys=["b"]))

    assert records == [{"step": 0, "time": 1.0}, {"step": 1, "time": 2.0, "b": 2}]


def test_columns_tell_missing_from_nan(metrics):
    """read_columns puts None where a name was not logged and NaN where it was."""
    metrics.write_bytes(GOOD)

    columns = read_columns(metrics)

    assert list(columns) == ["step", "time", "a", "b"]
    assert columns["a"][0] == 1.5 and math.isnan(columns["a"][1])
    assert columns["b"] == [None, 2]


def test_to_pandas_gives_one_row_per_record(metrics):
    """to_pandas returns a DataFrame with a column per name."""
    pytest.importorskip("pandas")
    metrics.write_bytes(GOOD)

    frame = to_pandas(metrics, keys=["a"])

    assert list(frame.columns) == ["step", "time", "a"]
    assert len(frame) == 2


def test_importing_the_reader_imports_neither_numpy_nor_pandas():
    """The reader and the loggers load without NumPy or pandas."""
    code = (
        "import sys, expbox.reader, expbox.loggers; "
        "print(sorted(m for m in ('numpy', 'pandas', 'torch') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )

    assert result.stdout.strip() == "[]", result.stderr
