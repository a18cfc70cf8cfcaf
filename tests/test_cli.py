"""Tests for the ``expbox`` command on real boxes, run in-process and as a child."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from expbox.cli import main

HOST = socket.gethostname()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command in-process; returns (exit status, stdout, stderr)."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def run_child(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m expbox.cli`` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "expbox.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


RECORDS = [
    {"step": 0, "time": 100.0, "loss": 1.0},
    {"step": 1, "time": 101.0, "loss": 0.5, "acc": 0.25, "note": 'a, "b"'},
    {"step": 2, "time": 102.5, "loss": "NaN", "acc": "Infinity", "flag": True},
    {"step": 3, "time": 103.0, "loss": "-Infinity", "acc": None, "n": 7},
    {"step": 4, "time": 104.0, "loss": 0.125, "acc": 0.75},
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A results root holding finished, failed, stale, corrupt and torn boxes."""
    root = tmp_path / "results"
    fin = make_box(
        root,
        "fin",
        records=RECORDS,
        title="the good one",
        created_at="2026-01-05T10:00:00+00:00",
        finished_at="2026-01-05T10:30:00+00:00",
        extra={"wandb": {"url": "https://wandb.ai/x/y/runs/z"}},
    )
    (fin / "artifacts" / "config.yaml").write_text("lr: 0.001\nlayers: [64, 64]\n")
    make_box(
        root,
        "failed",
        status="failed",
        project="other",
        created_at="2026-01-04T10:00:00+00:00",
        error={"type": "RuntimeError", "message": "boom"},
        records=[{"step": 0, "time": 1.0, "loss": 2.0}],
    )

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    make_box(
        root,
        "stale",
        status="running",
        finished_at=None,
        created_at="2026-01-03T10:00:00+00:00",
        system={"host": HOST, "pid": child.pid},
        records=[{"step": 41, "time": 1.0, "loss": 0.3}],
    )
    bad = make_box(root, "corrupt", created_at="2026-01-02T10:00:00+00:00")
    (bad / "meta.json").write_text('{"exp_id": "corrupt", "proj')
    # Without a readable creation time, a box sorts by its directory's mtime.
    os.utime(bad, (1767348000.0, 1767348000.0))  # 2026-01-02T10:00Z
    make_box(
        root,
        "torn",
        created_at="2026-01-01T10:00:00+00:00",
        records=[
            {"step": i, "time": 1.0 + i, "loss": 1.0 / (i + 1)} for i in range(20)
        ],
        tail='{"step": 20, "time": 21.0, "lo',
    )
    return root


def test_ls_lists_newest_first_with_shown_status(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ls prints a header and one aligned line per box, newest first."""
    code, out, err = run(["ls", "--results-root", str(root)], capsys)

    lines = out.splitlines()
    assert code == 0 and err == ""
    assert lines[0].split()[:7] == [
        "ID",
        "PROJECT",
        "TITLE",
        "STATUS",
        "CREATED",
        "DURATION",
        "STEP",
    ]
    ids = [line.split()[0] for line in lines[1:]]
    assert ids == ["fin", "failed", "stale", "corrupt", "torn"]
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert " finished " in by_id["fin"] and "loss=0.125" in by_id["fin"]
    assert " stale " in by_id["stale"] and " 41 " in by_id["stale"]
    assert " corrupt " in by_id["corrupt"]
    assert "loss=0.05" in by_id["torn"] and " 19 " in by_id["torn"]
    assert len({line.index("STATUS") for line in lines[:1]}) == 1
    assert all(line[lines[0].index("STATUS") - 2] == " " for line in lines)


def test_ls_json_filters_and_keys(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ls --json is strict JSON; --project, --status and --keys narrow it."""
    code, out, _ = run(
        ["ls", "--results-root", str(root), "--json", "--keys", "acc,loss"], capsys
    )
    entries = json.loads(out, parse_constant=lambda c: pytest.fail(c))
    fin = next(e for e in entries if e["id"] == "fin")

    assert code == 0
    assert fin["last_values"] == {"acc": 0.75, "loss": 0.125}
    assert fin["last_step"] == 4 and fin["duration_s"] == 1800.0

    _, out, _ = run(
        ["ls", "--results-root", str(root), "--json", "--status", "stale,corrupt"],
        capsys,
    )
    assert [e["id"] for e in json.loads(out)] == ["stale", "corrupt"]
    _, out, _ = run(["ls", "--results-root", str(root), "--project", "other"], capsys)
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["failed"]


def test_ls_shows_a_box_held_by_a_live_process_as_running(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running box whose process is alive is listed as running, not stale."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        make_box(
            root,
            "live",
            status="running",
            finished_at=None,
            system={"host": HOST, "pid": child.pid},
        )
        _, out, _ = run(["ls", "--results-root", str(root), "--json"], capsys)
    finally:
        child.kill()
        child.wait(timeout=30)
    live = next(e for e in json.loads(out) if e["id"] == "live")

    assert live["status"] == "running" and live["recorded_status"] == "running"


def test_ls_uses_the_results_root_variable(root: Path) -> None:
    """Without --results-root, $EXPBOX_RESULTS_ROOT names the root."""
    result = run_child(["ls", "--json"], EXPBOX_RESULTS_ROOT=str(root))

    assert result.returncode == 0, result.stderr
    assert {e["id"] for e in json.loads(result.stdout)} >= {"fin", "torn"}


def test_show_prints_meta_config_files_and_last_values(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """show prints metadata, the config snapshot, the files and last values."""
    code, out, _ = run(["show", "fin", "--results-root", str(root)], capsys)

    assert code == 0
    assert "status: finished" in out and "title: the good one" in out
    assert "extra.wandb.url: https://wandb.ai/x/y/runs/z" in out
    assert "  lr: 0.001" in out
    assert "  logs/metrics.jsonl  " in out and "  meta.json  " in out
    assert "last values (step 4):" in out and "  loss: 0.125" in out


def test_show_a_corrupt_box_says_so(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """show on a box with a corrupt meta.json exits 1 and names the file."""
    code, out, err = run(["show", "corrupt", "--results-root", str(root)], capsys)

    assert code == 1
    assert "status: corrupt" in out
    assert err.count("\n") == 1 and "meta.json" in err and "corrupt" in err


def test_show_notes_a_torn_last_line(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """show on a box whose last line is torn still works and notes it."""
    code, out, err = run(["show", "torn", "--results-root", str(root)], capsys)

    assert code == 0 and "last values (step 19):" in out
    assert "torn" in err


def test_summary_json_and_markdown(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """summary prints flat JSON, and --markdown a note whose front matter parses."""
    _, out, _ = run(["summary", "fin", "--results-root", str(root)], capsys)
    summary = json.loads(out)
    code, note, _ = run(
        ["summary", "fin", "--results-root", str(root), "--markdown"], capsys
    )
    front = yaml.safe_load(note.split("---\n")[1])

    assert summary["wandb_url"] == "https://wandb.ai/x/y/runs/z"
    assert summary["final.loss"] == 0.125 and summary["status"] == "finished"
    assert code == 0 and note.startswith("---\n")
    assert front["id"] == "fin" and front["tags"] == ["expbox", "demo"]
    assert "# the good one" in note and "| loss | 0.125 |" in note


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "nope"], "no box 'nope'"),
        (["show", "../x"], "one path component"),
        (["metrics", ".."], "dot"),
        (["summary", "fin", "--results-root", "/nonexistent/expbox"], "not a dir"),
        (["ls", "--status", "sleeping"], "is not one of"),
        (["ls", "--keys", ","], "--keys"),
    ],
)
def test_user_errors_exit_1_with_one_line(
    root: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """A user error exits 1 with a single 'expbox: error:' line and no traceback."""
    if "--results-root" not in argv:
        argv = [*argv, "--results-root", str(root)]

    code, out, err = run(argv, capsys)

    assert code == 1 and out == ""
    assert err.startswith("expbox: error: ") and err.count("\n") == 1
    assert message in err


def test_child_errors_have_no_traceback(tmp_path: Path) -> None:
    """Run as a program, a missing root gives one line and exit status 1."""
    result = run_child(["ls", "--results-root", str(tmp_path / "missing")])

    assert result.returncode == 1
    assert result.stderr.startswith("expbox: error: ")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed command line is argparse's usage error, exit status 2."""
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])

    assert exc.value.code == 2
    assert "usage: expbox" in capsys.readouterr().err


def test_metrics_csv_round_trip(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CSV export has the union of keys in first-seen order and reads back equal."""
    code, out, _ = run(["metrics", "fin", "--results-root", str(root)], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))

    assert code == 0
    assert list(rows[0]) == ["step", "time", "loss", "acc", "note", "flag", "n"]
    assert len(rows) == len(RECORDS)
    assert [r["loss"] for r in rows] == ["1.0", "0.5", "nan", "-inf", "0.125"]
    assert rows[2]["acc"] == "inf" and rows[3]["acc"] == ""
    assert rows[1]["note"] == 'a, "b"' and rows[2]["flag"] == "True"
    for row, record in zip(rows, RECORDS):
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert float(row[key]) == value
    assert math.isnan(float(rows[2]["loss"])) and float(rows[3]["loss"]) == -math.inf


def test_metrics_keys_and_jsonl(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--keys picks columns; jsonl output is strict JSON in the file's spelling."""
    _, out, _ = run(
        ["metrics", "fin", "--keys", "acc", "--results-root", str(root)], capsys
    )
    header = out.splitlines()[0]
    code, out, _ = run(
        ["metrics", "fin", "--format", "jsonl", "--results-root", str(root)], capsys
    )
    lines = [json.loads(x, parse_constant=pytest.fail) for x in out.splitlines()]

    assert header == "step,time,acc"
    assert code == 0 and len(lines) == len(RECORDS)
    assert lines[2]["loss"] == "NaN" and lines[3]["loss"] == "-Infinity"


def test_metrics_of_a_torn_box_notes_it(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exporting a box whose last line is torn gives the whole lines and a note."""
    code, out, err = run(["metrics", "torn", "--results-root", str(root)], capsys)

    assert code == 0 and len(out.splitlines()) == 1 + 20
    assert "expbox: note:" in err


def test_plot_writes_a_png_into_the_box(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """plot writes a real PNG into the box's figures/ and prints its path."""
    code, out, _ = run(
        ["plot", "fin", "loss", "acc", "--results-root", str(root)], capsys
    )
    png = Path(out.strip())

    assert code == 0
    assert png == root / "fin" / "figures" / "loss+acc.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000


def test_plot_to_a_path_by_time_with_a_torn_line(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """plot -o --x time works on a torn box and notes the torn line on stderr."""
    target = tmp_path / "out.png"

    code, _, err = run(
        [
            "plot",
            "torn",
            "loss",
            "-o",
            str(target),
            "--x",
            "time",
            "--results-root",
            str(root),
        ],
        capsys,
    )

    assert code == 0 and target.read_bytes()[:8] == PNG_MAGIC
    assert "expbox: note:" in err


def test_plot_unknown_key_is_an_error(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Plotting a key the box never logged exits 1 and names the key."""
    code, _, err = run(["plot", "fin", "nope", "--results-root", str(root)], capsys)

    assert code == 1 and "nope" in err and err.count("\n") == 1


def test_plot_without_matplotlib_is_one_line(root: Path) -> None:
    """Without matplotlib, plot exits 1 with one line telling how to install it."""
    code = (
        "import sys; sys.modules['matplotlib'] = None; "
        "from expbox.cli import main; "
        f"sys.exit(main(['plot', 'fin', 'loss', '--results-root', {str(root)!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 1
    assert "pip install matplotlib" in result.stderr
    assert result.stderr.count("\n") == 1


def test_metrics_into_a_closed_pipe_is_quiet(root: Path) -> None:
    """Piping the export into a reader that stops early is not an error."""
    box = make_box(
        root,
        "long",
        records=[{"step": i, "time": float(i), "loss": 1.0} for i in range(50_000)],
    )
    assert box.exists()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "expbox.cli",
            "metrics",
            "long",
            "--results-root",
            str(root),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.readline()
    child.stdout.close()
    err = child.stderr.read()
    child.wait(timeout=120)

    assert child.returncode in (0, -signal.SIGPIPE)
    assert b"Traceback" not in err


def test_notion_sync_dry_run_prints_pages(root: Path) -> None:
    """The Notion dry run prints one page per readable box and needs no token."""
    script = Path(__file__).resolve().parents[1] / "examples" / "notion_sync.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTION_")}

    result = subprocess.run(
        [sys.executable, str(script), "--dry-run", "--results-root", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    pages = {
        p["id"]: p["properties"]
        for p in map(json.loads, result.stdout.split("\n")[:-1])
    }

    assert result.returncode == 0, result.stderr
    assert set(pages) == {"fin", "failed", "stale", "torn"}
    assert "skipping corrupt" in result.stderr
    fin = pages["fin"]
    assert fin["Name"]["title"][0]["text"]["content"] == "the good one"
    assert fin["ID"]["rich_text"][0]["text"]["content"] == "fin"
    assert fin["Status"] == {"select": {"name": "finished"}}
    assert fin["W&B"] == {"url": "https://wandb.ai/x/y/runs/z"}
    assert fin["loss"] == {"number": 0.125}
    assert pages["stale"]["Status"] == {"select": {"name": "stale"}}


def test_notion_sync_without_token_is_an_error(root: Path) -> None:
    """Without a token and without --dry-run the example exits 1 with one line."""
    script = Path(__file__).resolve().parents[1] / "examples" / "notion_sync.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTION_")}

    result = subprocess.run(
        [sys.executable, str(script), "--results-root", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )

    assert result.returncode == 1 and "NOTION_TOKEN" in result.stderr
