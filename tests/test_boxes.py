"""Tests for listing boxes, judging liveness and reading the end of a metrics file."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from boxmaker import HOST, make_box

from expbox import boxes
from expbox.errors import BoxNotFoundError
from expbox.tail import read_tail


def hold_process() -> subprocess.Popen[bytes]:
    """A live child process whose pid a running box can name."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_tail_gives_last_step_and_restores_non_finite(tmp_path: Path) -> None:
    """The last record's step and values come back, NaN and infinities as floats."""
    records = [{"step": i, "time": 1.0 + i, "loss": 1.0 / (i + 1)} for i in range(50)]
    records.append({"step": 50, "time": 60.0, "loss": "NaN", "hi": "Infinity"})
    records.append({"step": 51, "time": 61.0, "lo": "-Infinity", "name": "NaNx"})
    path = make_box(tmp_path, "a", records=records) / "logs" / "metrics.jsonl"

    tail = read_tail(path)

    assert tail.last_step == 51 and tail.last_time == 61.0
    assert tail.values["lo"] == -math.inf and tail.values["hi"] == math.inf
    assert math.isnan(tail.values["loss"])
    assert tail.values["name"] == "NaNx"
    assert list(tail.values)[:2] == ["lo", "name"]
    assert not tail.torn


def test_tail_skips_a_torn_last_line(tmp_path: Path) -> None:
    """A last line cut short by a crash is skipped and reported as torn."""
    records = [{"step": i, "time": 1.0, "loss": float(i)} for i in range(10)]
    box = make_box(tmp_path, "a", records=records, tail='{"step": 10, "time": 1.')

    tail = read_tail(box / "logs" / "metrics.jsonl")

    assert tail.torn
    assert tail.last_step == 9 and tail.values == {"loss": 9.0}


def test_tail_reads_a_line_longer_than_a_block(tmp_path: Path) -> None:
    """A record longer than the first read block is put together whole."""
    big = "x" * 300_000
    records = [{"step": i, "time": 1.0, "a": 1} for i in range(20_000)]
    records.append({"step": 20_000, "time": 2.0, "s": big})
    box = make_box(tmp_path, "a", records=records)

    tail = read_tail(box / "logs" / "metrics.jsonl", max_bytes=0)

    assert tail.last_step == 20_000 and tail.values == {"s": big}


def test_tail_looks_back_for_requested_keys_within_a_budget(tmp_path: Path) -> None:
    """Rare keys are found further back, but not beyond ``max_bytes``."""
    records = [{"step": 0, "time": 0.0, "early": 1.0}]
    records += [{"step": i, "time": 0.0, "loss": float(i)} for i in range(1, 20_000)]
    records[19_000]["val"] = 0.5
    path = make_box(tmp_path, "a", records=records) / "logs" / "metrics.jsonl"

    near = read_tail(path, ["val", "loss", "early"], max_bytes=64 * 1024)
    everything = read_tail(path, ["early"], max_bytes=path.stat().st_size)

    assert near.values == {"val": 0.5, "loss": 19_999.0}
    assert everything.values == {"early": 1.0}


def test_tail_of_missing_or_empty_file(tmp_path: Path) -> None:
    """A box without metrics gives an empty tail instead of an error."""
    box = make_box(tmp_path, "a", records=[])

    empty = read_tail(box / "logs" / "metrics.jsonl")
    missing = read_tail(box / "logs" / "nothing.jsonl")

    assert empty.exists and empty.last_step is None and empty.values == {}
    assert not missing.exists and missing.last_step is None


def test_running_box_with_a_live_process_is_running(tmp_path: Path) -> None:
    """A running box whose process on this host is alive is shown as running."""
    child = hold_process()
    try:
        box = make_box(
            tmp_path,
            "a",
            status="running",
            finished_at=None,
            system={"host": HOST, "pid": child.pid},
        )
        assert boxes.inspect_box(box).status == "running"
    finally:
        child.kill()
        child.wait(timeout=30)


def test_killed_process_makes_the_box_stale(tmp_path: Path) -> None:
    """After SIGKILL the box is stale at once, even before the child is reaped."""
    child = hold_process()
    box = make_box(
        tmp_path,
        "a",
        status="running",
        finished_at=None,
        system={"host": HOST, "pid": child.pid},
    )
    os.kill(child.pid, signal.SIGKILL)
    try:
        # Until wait() the child is a zombie, which kill(pid, 0) still finds.
        deadline = time.monotonic() + 20
        while boxes.inspect_box(box).status != "stale" and time.monotonic() < deadline:
            time.sleep(0.05)
        info = boxes.inspect_box(box)
    finally:
        child.wait(timeout=30)

    assert info.status == "stale"
    assert str(child.pid) in (info.problem or "")
    assert boxes.inspect_box(box).status == "stale"


def test_reused_pid_does_not_keep_a_box_alive(tmp_path: Path) -> None:
    """A live pid that started long after meta.json was written is not the writer."""
    if not sys.platform.startswith("linux"):
        pytest.skip("process start times are read from /proc")
    child = hold_process()
    try:
        box = make_box(
            tmp_path,
            "a",
            status="running",
            finished_at=None,
            system={"host": HOST, "pid": child.pid},
        )
        an_hour_ago = time.time() - 3600
        os.utime(box / "meta.json", (an_hour_ago, an_hour_ago))
        assert boxes.inspect_box(box).status == "stale"
    finally:
        child.kill()
        child.wait(timeout=30)


@pytest.mark.parametrize(
    ("heartbeat_age", "expected"),
    [(None, "running"), (5.0, "running"), (31.0, "stale"), (3600.0, "stale")],
)
def test_other_host_is_judged_by_its_heartbeat(
    tmp_path: Path, heartbeat_age: float | None, expected: str
) -> None:
    """On another host, a heartbeat older than three intervals means stale."""
    box = make_box(
        tmp_path,
        "a",
        status="running",
        finished_at=None,
        system={"host": "node-elsewhere", "pid": 12345},
    )
    if heartbeat_age is not None:
        beat = box / "logs" / "heartbeat"
        beat.touch()
        then = time.time() - heartbeat_age
        os.utime(beat, (then, then))

    assert boxes.inspect_box(box).status == expected


def test_heartbeat_interval_from_meta_is_used(tmp_path: Path) -> None:
    """A longer recorded heartbeat interval keeps an old heartbeat acceptable."""
    box = make_box(
        tmp_path,
        "a",
        status="running",
        finished_at=None,
        heartbeat_interval=60.0,
        system={"host": "elsewhere", "pid": 1},
    )
    beat = box / "logs" / "heartbeat"
    beat.touch()
    os.utime(beat, (time.time() - 100, time.time() - 100))

    assert boxes.inspect_box(box).status == "running"


def test_recorded_end_statuses_are_kept(tmp_path: Path) -> None:
    """Finished, failed and terminated boxes keep their status whatever the pid."""
    for status in ("finished", "failed", "terminated"):
        box = make_box(
            tmp_path, status, status=status, system={"host": HOST, "pid": 999_999_999}
        )
        assert boxes.inspect_box(box).status == status


@pytest.mark.parametrize(
    "content", [b"{not json", b"", b"[1, 2]", b'{"exp_id": "a", "status": 3}']
)
def test_corrupt_meta_is_listed_as_corrupt(tmp_path: Path, content: bytes) -> None:
    """An unreadable meta.json gives a corrupt entry with a reason, not an error."""
    make_box(tmp_path, "good")
    bad = make_box(tmp_path, "bad")
    (bad / "meta.json").write_bytes(content)

    listed = {box.exp_id: box for box in boxes.list_boxes(tmp_path)}

    assert listed["good"].status == "finished"
    assert listed["bad"].status == "corrupt" and listed["bad"].problem
    assert listed["bad"].get("project") is None


def test_list_is_newest_first_and_filters(tmp_path: Path) -> None:
    """Boxes come newest first; project and shown status filter the list."""
    make_box(tmp_path, "old", created_at="2025-01-01T00:00:00+00:00")
    make_box(tmp_path, "new", created_at="2026-06-01T00:00:00Z", project="other")
    make_box(tmp_path, "mid", created_at="2025-06-01T09:00:00+09:00", status="failed")
    (tmp_path / "not-a-box").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "stray.txt").write_text("x")

    assert [b.exp_id for b in boxes.list_boxes(tmp_path)] == ["new", "mid", "old"]
    assert [b.exp_id for b in boxes.list_boxes(tmp_path, project="demo")] == [
        "mid",
        "old",
    ]
    assert [b.exp_id for b in boxes.list_boxes(tmp_path, status="failed")] == ["mid"]
    assert boxes.list_boxes(tmp_path, status=["stale"]) == []


def test_missing_results_root_is_an_error(tmp_path: Path) -> None:
    """A results root that does not exist raises FileNotFoundError naming it."""
    with pytest.raises(FileNotFoundError, match="nowhere"):
        boxes.list_boxes(tmp_path / "nowhere")


def test_find_box_by_id_and_unique_prefix(tmp_path: Path) -> None:
    """An exact id or a unique prefix finds a box; others raise clear errors."""
    make_box(tmp_path, "250101-1000")
    make_box(tmp_path, "250101-1100")
    make_box(tmp_path, "260101-0900")

    assert boxes.find_box(tmp_path, "26").exp_id == "260101-0900"
    assert boxes.find_box(tmp_path, "250101-1000").exp_id == "250101-1000"
    with pytest.raises(ValueError, match="several boxes"):
        boxes.find_box(tmp_path, "2501")
    with pytest.raises(BoxNotFoundError):
        boxes.find_box(tmp_path, "999")
    with pytest.raises(ValueError, match="one path component"):
        boxes.find_box(tmp_path, "../x")
    with pytest.raises(ValueError, match="dot"):
        boxes.find_box(tmp_path, "..")


def test_duration_of_finished_and_stale_boxes(tmp_path: Path) -> None:
    """Finished boxes last until finished_at, stale ones until their last sign."""
    done = make_box(tmp_path, "done")
    dead = make_box(
        tmp_path,
        "dead",
        status="running",
        finished_at=None,
        created_at="2026-01-01T10:00:00+00:00",
        system={"host": "elsewhere", "pid": 1},
    )
    beat = dead / "logs" / "heartbeat"
    beat.touch()
    last = 1767261600.0 + 120  # 2026-01-01T10:02:00Z
    os.utime(beat, (last, last))

    assert boxes.inspect_box(done).duration == 1800.0
    assert boxes.inspect_box(dead).status == "stale"
    assert boxes.inspect_box(dead).duration == 120.0


def test_summary_is_flat_with_final_metrics(tmp_path: Path) -> None:
    """The summary is one flat JSON object with W&B URL and final.<key> values."""
    url = "https://wandb.ai/me/demo/runs/abc"
    box = make_box(
        tmp_path,
        "a",
        purpose="why",
        extra={"wandb": {"url": url}},
        records=[{"step": 0, "time": 1.0, "loss": "NaN", "acc": 0.5}],
    )
    (box / "artifacts" / "config.yaml").write_text("lr: 0.1\n")

    summary = boxes.box_summary(boxes.inspect_box(box))

    assert summary["wandb_url"] == url and summary["purpose"] == "why"
    assert summary["final.loss"] == "NaN" and summary["final.acc"] == 0.5
    assert summary["last_step"] == 0
    assert summary["config_snapshot"] == str((box / "artifacts/config.yaml").resolve())
    assert all(not isinstance(v, (dict, list)) for v in summary.values())
    json.dumps(summary, allow_nan=False)


def test_tail_skips_a_torn_line_inside_the_file(tmp_path: Path) -> None:
    """A torn line left inside the file by a resumed run is skipped, not fatal."""
    records = [{"step": 0, "time": 1.0, "val": 3.0}]
    box = make_box(tmp_path, "a", records=records, tail='{"step": 1, "ti\n')
    with open(box / "logs" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 1, "time": 2.0, "loss": 0.5}) + "\n")

    tail = read_tail(box / "logs" / "metrics.jsonl", ["loss", "val"])

    assert not tail.torn
    assert tail.last_step == 1 and tail.values == {"loss": 0.5, "val": 3.0}


@pytest.mark.parametrize("pid", [-1, 0, 2**32, 2**63 - 1, "4242", 1.5, True, None])
def test_a_pid_that_names_no_process_is_judged_by_heartbeat(
    tmp_path: Path, pid: Any
) -> None:
    """A running box on this host whose pid is not a usable pid is judged by its
    heartbeat, never by os.kill."""
    box = make_box(
        tmp_path,
        "a",
        status="running",
        finished_at=None,
        system={"host": HOST, "pid": pid},
    )
    without_heartbeat = boxes.inspect_box(box)
    beat = box / "logs" / "heartbeat"
    beat.touch()
    os.utime(beat, (time.time() - 3600, time.time() - 3600))
    with_old_heartbeat = boxes.inspect_box(box)

    assert without_heartbeat.status == "running"
    assert with_old_heartbeat.status == "stale"
    assert "heartbeat" in (with_old_heartbeat.problem or "")


@pytest.mark.parametrize("interval", ["10", -1, 0, True, [5], 1e308])
def test_a_malformed_heartbeat_interval_falls_back_to_the_default(
    tmp_path: Path, interval: Any
) -> None:
    """A heartbeat interval that is not a positive number is replaced by the
    default, so an hour-old heartbeat is stale and a fresh one is not."""
    box = make_box(
        tmp_path,
        "a",
        status="running",
        finished_at=None,
        heartbeat_interval=interval,
        system={"host": "node-elsewhere", "pid": 7},
    )
    beat = box / "logs" / "heartbeat"
    beat.touch()
    fresh = boxes.inspect_box(box).status
    os.utime(beat, (time.time() - 3600, time.time() - 3600))
    old = boxes.inspect_box(box).status

    assert fresh == "running"
    assert old == ("running" if interval == 1e308 else "stale")


MALFORMED_META: list[Any] = [
    [1, 2],
    "a string",
    {"status": "finished", "created_at": 1767261600},
    {"status": "finished", "created_at": "0001-01-01T00:00:00+05:00"},
    {"status": "finished", "finished_at": "9999-12-31T23:59:59-05:00"},
    {"status": "running", "system": "node-1"},
    {"status": "running", "system": {"host": HOST, "pid": "12"}},
    {"status": "running", "heartbeat_interval": "often"},
    {"status": "running", "heartbeat_interval": -5},
    {"status": "finished", "extra": {"wandb": ["not", "a", "mapping"]}},
    {"status": "finished", "extra": "not a mapping"},
    {"status": ["running"]},
]


@pytest.mark.parametrize("meta", MALFORMED_META)
def test_a_malformed_meta_never_breaks_the_listing(tmp_path: Path, meta: Any) -> None:
    """Each malformed box is listed, the good one too, and its summary can be made."""
    make_box(tmp_path, "good")
    bad = make_box(tmp_path, "bad")
    (bad / "meta.json").write_text(json.dumps(meta))

    listed = {box.exp_id: box for box in boxes.list_boxes(tmp_path)}
    summary = boxes.box_summary(listed["bad"])

    assert listed["good"].status == "finished"
    assert listed["bad"].status in boxes.SHOWN_STATUSES
    if not isinstance(meta, dict) or not isinstance(meta.get("status"), str):
        assert listed["bad"].status == "corrupt" and listed["bad"].problem
    assert summary["id"] == "bad" and summary["wandb_url"] is None
    assert listed["bad"].duration is None or listed["bad"].duration >= 0


def test_a_time_beyond_local_range_is_unknown() -> None:
    """A timestamp that cannot be shown in local time is read as unknown."""
    assert boxes.parse_time("0001-01-01T00:00:00+05:00") is None
    assert boxes.parse_time("9999-12-31T23:59:59-05:00") is None
    assert boxes.parse_time("2026-01-01T00:00:00Z") is not None


def test_a_directory_in_place_of_meta_is_corrupt(tmp_path: Path) -> None:
    """A directory named meta.json makes its box corrupt, not the listing fail."""
    make_box(tmp_path, "good")
    bad = make_box(tmp_path, "bad")
    (bad / "meta.json").unlink()
    (bad / "meta.json").mkdir()

    listed = {box.exp_id: box.status for box in boxes.list_boxes(tmp_path)}

    assert listed == {"good": "finished", "bad": "corrupt"}
