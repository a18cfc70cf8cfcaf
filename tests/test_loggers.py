"""Tests of FileLogger and NullLogger, read back from real files."""

from __future__ import annotations

import gc
import math
import os
import re
import stat
import threading
import warnings
import weakref

import numpy as np
import orjson
import pytest
import torch

from expbox.loggers import FileLogger, Logger, NullLogger
from expbox.paths import ExpPaths
from expbox.reader import read_records


@pytest.fixture
def paths(tmp_path):
    box = ExpPaths(tmp_path / "box")
    box.root.mkdir()
    box.make_dirs()
    return box


@pytest.fixture
def logger(paths):
    log = FileLogger(paths, exp_id="t")
    yield log
    log.close(timeout=10)


def lines(paths):
    return [orjson.loads(line) for line in paths.metrics.read_bytes().splitlines()]


def test_steps_count_on_from_start_step_and_from_given_steps(paths):
    """Without step= a record gets one more than the last step, from start_step."""
    log = FileLogger(paths, exp_id="t", start_step=5)
    log.log_metrics({"a": 1.0})
    log.log_metrics(a=2.0)
    log.log_metrics({"a": 3.0}, step=20)
    log.log_metrics({"a": 4.0}, b=5)
    log.close()

    assert [(r["step"], r["a"]) for r in lines(paths)] == [
        (5, 1.0),
        (6, 2.0),
        (20, 3.0),
        (21, 4.0),
    ]
    assert lines(paths)[-1]["b"] == 5
    assert log.last_step == 21


def test_lines_put_step_and_time_first(logger, paths):
    """Each line is {"step", "time", ...metrics} with the call's wall-clock time."""
    logger.log_metrics({"z": 1.0, "a": 2.0}, step=3)
    logger.flush()

    (line,) = paths.metrics.read_bytes().splitlines()
    assert list(orjson.loads(line)) == ["step", "time", "z", "a"]
    assert orjson.loads(line)["time"] > 1.6e9


def test_hundred_thousand_records_are_all_there_in_order(logger, paths):
    """100k records logged back to back are all on disk, in order, after flush."""
    for i in range(100_000):
        logger.log_metrics({"i": i, "x": 0.5})
    logger.flush()

    steps = [r["step"] for r in lines(paths)]
    assert steps == list(range(100_000))


def test_records_from_several_threads_are_whole_and_ordered(logger, paths):
    """Threads logging at once give whole lines, each thread's in its call order."""

    def work(name):
        for i in range(20_000):
            logger.log_metrics({"thread": name, "i": i, "pad": "x" * (i % 50)})

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    logger.flush()

    records = lines(paths)
    assert len(records) == 80_000
    for n in range(4):
        seen = [r["i"] for r in records if r["thread"] == f"t{n}"]
        assert seen == list(range(20_000))
    assert sorted(r["step"] for r in records) == list(range(80_000))


def test_changing_the_dict_after_the_call_changes_nothing(logger, paths):
    """The record is a snapshot of the dict at the call."""
    metrics = {"a": 1.0}
    logger.log_metrics(metrics)
    metrics["a"] = 2.0
    metrics["b"] = 3.0
    logger.flush()

    assert lines(paths)[0] == {"step": 0, "time": lines(paths)[0]["time"], "a": 1.0}


def test_arrays_and_tensors_are_copied_at_the_call(logger, paths):
    """In-place changes to a 0-d array or a tensor after the call are not logged."""
    array = np.array(1.5)
    tensor = torch.tensor(2.5)
    logger.log_metrics({"array": array, "tensor": tensor})
    array[...] = 9.0
    tensor.add_(10.0)
    logger.flush()

    record = lines(paths)[0]
    assert (record["array"], record["tensor"]) == (1.5, 2.5)


def test_no_reference_to_a_logged_tensor_is_kept(logger):
    """A tensor with a graph can be freed right after it is logged."""
    weight = torch.ones(3, requires_grad=True)
    loss = (weight * 2.0).sum()
    ref = weakref.ref(loss)
    logger.log_metrics({"loss": loss})
    del loss
    gc.collect()

    assert ref() is None


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"ok": 1.0, "bad": [1, 2]}, "'bad'"),
        ({"ok": 1.0, "bad": {1}}, "'bad'"),
        ({"ok": 1.0, "bad": np.ones(3)}, "'bad'"),
        ({"ok": 1.0, "bad": object()}, "'bad'"),
        ({"ok": 1.0, 0: 0.5}, "strings"),
        ({"ok": 1.0, "big": 2**70}, "'big'"),
    ],
)
def test_a_refused_record_logs_nothing_and_later_records_work(
    logger, paths, bad, match
):
    """A bad value or key raises TypeError at the call; the record is not logged."""
    with pytest.raises(TypeError, match=match):
        logger.log_metrics(bad)
    logger.log_metrics({"ok": 2.0})
    logger.flush()

    assert [r["ok"] for r in lines(paths)] == [2.0]
    assert lines(paths)[0]["step"] == 0


@pytest.mark.parametrize("name", ["step", "time"])
def test_reserved_names_raise_value_error(logger, name):
    """A metric called step or time raises ValueError at the call."""
    with pytest.raises(ValueError, match="reserved"):
        logger.log_metrics({name: 1.0})


@pytest.mark.parametrize(
    ("metrics", "key"),
    [({"s": "a\ud800b"}, "s"), ({"x": 1.0, "s\udc00": 1.0}, "s\udc00")],
)
def test_lone_surrogates_are_refused_at_the_call(logger, paths, metrics, key):
    """A lone surrogate in a name or string, even under a known name, raises."""
    logger.log_metrics({"s": "plain", "x": 1.0})

    with pytest.raises(TypeError, match=re.escape(repr(key))):
        logger.log_metrics(metrics)
    logger.log_metrics({"s": "entraînement", "x": 2.0})
    logger.close()

    assert [r["s"] for r in lines(paths)] == ["plain", "entraînement"]


def test_a_non_mapping_raises_type_error(logger):
    """Passing a list as metrics raises TypeError."""
    with pytest.raises(TypeError, match="mapping"):
        logger.log_metrics([1.0, 2.0])


def test_nonfinite_values_round_trip_from_every_source(logger, paths):
    """NaN and infinities from floats, NumPy and tensors read back as floats."""
    logger.log_metrics(
        {
            "nan": math.nan,
            "inf": math.inf,
            "ninf": -math.inf,
            "np_nan": np.float32("nan"),
            "np_inf": np.float64("inf"),
            "t_ninf": torch.tensor(float("-inf")),
            "big": 1.7e308,
        }
    )
    logger.flush()

    raw = paths.metrics.read_bytes()
    (record,) = read_records(paths.metrics)
    assert b'"NaN"' in raw and b'"-Infinity"' in raw
    assert math.isnan(record["nan"]) and math.isnan(record["np_nan"])
    assert record["inf"] == math.inf and record["np_inf"] == math.inf
    assert record["ninf"] == -math.inf and record["t_ninf"] == -math.inf
    assert record["big"] == 1.7e308


def test_a_new_key_late_in_a_run_only_appends(logger, paths):
    """A name first seen at record 100k leaves every earlier byte unchanged."""
    for i in range(100_000):
        logger.log_metrics({"loss": i / 7})
    logger.flush()
    before = paths.metrics.read_bytes()
    logger.log_metrics({"loss": 1.0, "new": 2.0})
    logger.flush()

    after = paths.metrics.read_bytes()
    assert after.startswith(before)
    assert orjson.loads(after[len(before) :])["new"] == 2.0


def test_log_figure_writes_a_png_and_reaches_sinks_in_order(paths):
    """log_figure saves figures/<name>.png and a sink sees it between records."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sink = RecordingSink()
    log = FileLogger(paths, exp_id="t", sinks=[sink])
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    log.log_metrics({"a": 1.0})
    target = log.log_figure(fig, "curve", step=0)
    log.log_metrics({"a": 2.0})
    log.close()
    plt.close(fig)

    assert target == paths.figures / "curve.png"
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in paths.figures.iterdir()] == ["curve.png"]
    assert [event[0] for event in sink.events] == ["records", "figure", "records"]
    assert sink.events[1][1:] == (target, "curve", 0)
    assert sink.closed


def test_log_figure_does_not_write_through_a_planted_link(logger, paths, tmp_path):
    """A symlink at a guessable temporary name cannot redirect the PNG."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    planted = paths.figures / f".curve.png.{os.getpid()}.tmp"
    planted.symlink_to(victim)
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])

    target = logger.log_figure(fig, "curve")
    plt.close(fig)

    assert victim.read_text() == "keep me\n"
    assert not target.is_symlink()
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class BrokenFigure:
    """A figure whose savefig writes a little and then fails."""

    def savefig(self, file, format):
        file.write(b"\x89PNG")
        raise RuntimeError("renderer failed")


def test_a_failed_savefig_leaves_no_file_behind(logger, paths):
    """When savefig raises, the error propagates and figures/ holds nothing."""
    with pytest.raises(RuntimeError, match="renderer failed"):
        logger.log_figure(BrokenFigure(), "curve")

    assert list(paths.figures.iterdir()) == []


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", ""])
def test_log_figure_checks_the_name(logger, name):
    """An unsafe figure name raises ValueError before anything is written."""
    with pytest.raises(ValueError):
        logger.log_figure(object(), name)


def test_log_artifact_copies_a_file(logger, paths, tmp_path):
    """log_artifact copies a file into artifacts/, under its name or a new one."""
    source = tmp_path / "table.csv"
    source.write_text("a,b\n1,2\n")

    first = logger.log_artifact(source)
    second = logger.log_artifact(str(source), name="copy.csv")

    assert first == paths.artifacts / "table.csv"
    assert second.read_text() == "a,b\n1,2\n"


@pytest.mark.parametrize(
    ("source_name", "name"),
    [("config.yaml", None), ("mine.yaml", "config.yaml"), ("mine.yaml", "Config.YAML")],
)
def test_log_artifact_never_replaces_the_config_snapshot(
    logger, paths, tmp_path, source_name, name
):
    """An artifact named config.yaml is refused, pointing at name=, snapshot kept."""
    paths.config_snapshot.write_text("lr: 0.1\n")
    source = tmp_path / source_name
    source.write_text("lr: 999\n")

    with pytest.raises(ValueError, match="config snapshot.*name="):
        logger.log_artifact(source, name=name)

    assert paths.config_snapshot.read_text() == "lr: 0.1\n"
    assert logger.log_artifact(source, name="config.src.yaml").exists()


def test_log_artifact_keeps_permission_bits_and_times(logger, tmp_path):
    """The copy keeps the source's mode and modification time, as shutil.copy2."""
    source = tmp_path / "run.sh"
    source.write_text("echo hi\n")
    source.chmod(0o750)
    os.utime(source, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))

    target = logger.log_artifact(source)

    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert target.stat().st_mtime_ns == source.stat().st_mtime_ns


def test_log_artifact_does_not_write_through_a_planted_link(logger, paths, tmp_path):
    """A symlink at a guessable temporary name cannot redirect the copy."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    planted = paths.artifacts / f".table.csv.{os.getpid()}.tmp"
    planted.symlink_to(victim)
    source = tmp_path / "table.csv"
    source.write_text("a,b\n")

    target = logger.log_artifact(source)

    assert victim.read_text() == "keep me\n"
    assert not target.is_symlink() and target.read_text() == "a,b\n"
    assert sorted(p.name for p in paths.artifacts.iterdir()) == [
        planted.name,
        "table.csv",
    ]


def test_threads_saving_one_artifact_name_never_collide(logger, paths, tmp_path):
    """Threads copying to the same name all succeed; one whole copy is left."""
    sources = []
    for i in range(8):
        source = tmp_path / f"src{i}" / "shared.bin"
        source.parent.mkdir()
        source.write_bytes(bytes([i]) * 200_000)
        sources.append(source)
    errors = []

    def save(source):
        try:
            for _ in range(20):
                logger.log_artifact(source)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    data = (paths.artifacts / "shared.bin").read_bytes()
    assert len(data) == 200_000 and len(set(data)) == 1
    assert [p.name for p in paths.artifacts.iterdir()] == ["shared.bin"]


def test_log_artifact_names_a_missing_source(logger, tmp_path):
    """A missing source raises FileNotFoundError naming it."""
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        logger.log_artifact(tmp_path / "nothere.txt")


class RecordingSink:
    name = "recording"

    def __init__(self):
        self.events = []
        self.threads = set()
        self.closed = False

    def on_records(self, records):
        self.threads.add(threading.current_thread().name)
        self.events.append(("records", records))

    def on_figure(self, path, name, step):
        self.events.append(("figure", path, name, step))

    def close(self):
        self.closed = True


class FailingSink(RecordingSink):
    name = "failing"

    def on_records(self, records):
        raise ConnectionError("service down")


def test_sinks_get_records_on_the_writer_thread_with_float_nonfinite(paths):
    """Sinks receive (step, time, metrics) tuples with NaN as a float."""
    sink = RecordingSink()
    log = FileLogger(paths, exp_id="sinky", sinks=[sink])
    log.log_metrics({"a": math.nan}, step=4)
    log.close()

    rows = [row for event in sink.events for row in event[1]]
    assert len(rows) == 1
    step, when, metrics = rows[0]
    assert step == 4 and when > 0 and math.isnan(metrics["a"])
    assert list(metrics) == ["a"]
    assert sink.threads == {"expbox-writer:sinky"}


def test_a_failing_sink_is_warned_about_once_and_dropped(paths):
    """A sink that raises is reported once and left out; the file stays complete."""
    good = RecordingSink()
    log = FileLogger(paths, exp_id="t", sinks=[FailingSink(), good])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(3):
            log.log_metrics({"a": float(i)})
            log.flush()
        log.close()

    assert [w.category for w in caught] == [RuntimeWarning]
    assert "failing" in str(caught[0].message)
    assert log.meta_extra()["sink_errors"][0]["sink"] == "failing"
    assert len(lines(paths)) == 3
    assert sum(len(event[1]) for event in good.events) == 3


def test_close_is_safe_twice_and_later_calls_do_nothing(paths):
    """A second close returns the same count; logging after close warns once."""
    log = FileLogger(paths, exp_id="t")
    log.log_metrics({"a": 1.0})

    assert log.close() == 0
    assert log.close() == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log.log_metrics({"a": 2.0})
        log.log_metrics({"a": 3.0})
        log.flush()
    assert len(caught) == 1 and "closed" in str(caught[0].message)
    assert len(lines(paths)) == 1


def test_null_logger_offers_the_interface_and_does_nothing(tmp_path):
    """NullLogger takes every call, writes nothing and reports nothing."""
    log = NullLogger()
    log.log_metrics({"a": object()}, step=3, b=1)
    log.log_metrics()

    assert log.log_figure(object(), "x") is None
    assert log.log_artifact(tmp_path / "missing") is None
    assert log.flush() is True
    assert log.close() == 0 and log.close() == 0
    assert log.last_step is None and log.meta_extra() == {}
    assert list(tmp_path.iterdir()) == []


def test_both_loggers_satisfy_the_logger_protocol(logger):
    """FileLogger and NullLogger are Loggers."""
    assert isinstance(logger, Logger)
    assert isinstance(NullLogger(), Logger)


def test_meta_extra_counts_drops_only_with_the_drop_policy(paths):
    """With on_full='drop' records past max_pending are dropped and counted."""
    gate = threading.Event()
    log = FileLogger(paths, exp_id="t", max_pending=10, on_full="drop")
    real_write = log._writer.os_write

    def slow_write(fd, data):
        gate.wait(10)
        return real_write(fd, data)

    log._writer.os_write = slow_write
    for i in range(5_000):
        log.log_metrics({"i": i})
    gate.set()
    log.close(timeout=30)

    dropped = log.meta_extra()["dropped_records"]
    assert dropped > 0
    assert len(lines(paths)) + dropped == 5_000


@pytest.mark.parametrize(
    "step", [2**64, -(2**63) - 1, 10**5000], ids=["2**64", "-2**63-1", "10**5000"]
)
def test_a_step_beyond_64_bits_is_refused_at_the_call(logger, paths, step):
    """An int step that JSON readers cannot hold raises at the call; nothing is lost."""
    logger.log_metrics({"x": 1.0}, step=0)

    with pytest.raises(ValueError, match="64 bits"):
        logger.log_metrics({"x": 2.0}, step=step)
    logger.log_metrics({"x": 3.0}, step=1)
    logger.flush()

    lines = paths.metrics.read_text().splitlines()
    assert [orjson.loads(x)["x"] for x in lines] == [1.0, 3.0]
