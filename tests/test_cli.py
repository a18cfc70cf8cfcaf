"""Tests for the ``expbox`` command on real boxes, run in-process and as a child."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from boxmaker import HOST, make_box

from expbox import cli
from expbox.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


RECORDS: list[dict[str, Any]] = [
    {"loss": 1.0},
    {"loss": 0.5, "acc": 0.25, "note": 'a, "b"'},
    {"loss": math.nan, "acc": math.inf, "flag": True},
    {"loss": -math.inf, "acc": None, "n": 7},
    {"loss": 0.125, "acc": 0.75},
]

# One box made through the public API by a real process; how the process ends is
# chosen by its exp_id.
CHILD = """
import json, os, sys, time
import expbox as xb

root, exp_id = sys.argv[1], sys.argv[2]
records = json.loads(sys.argv[3])
ctx = xb.init(project="other" if exp_id == "failed" else "demo",
              title="the good one" if exp_id == "fin" else exp_id,
              purpose="check the listing", config={"lr": 0.001, "layers": [64, 64]},
              results_root=root, exp_id=exp_id, heartbeat_interval=1.0)
for step, record in enumerate(records):
    ctx.logger.log_metrics({k: float(v) if v in ("nan", "inf", "-inf") else v
                            for k, v in record.items()}, step=step)
if exp_id == "fin":
    ctx.meta.extra["wandb"] = {"url": "https://wandb.ai/x/y/runs/z"}
    xb.save(ctx)
elif exp_id == "failed":
    raise RuntimeError("boom")
elif exp_id in ("live", "killed"):
    ctx.logger.flush()
    print("ready", flush=True)
    time.sleep(300)
elif exp_id == "exited":
    ctx.logger.flush()
    os._exit(3)
"""


def _as_json(records: list[dict[str, Any]]) -> str:
    return json.dumps(
        [
            {
                k: str(v) if isinstance(v, float) and not math.isfinite(v) else v
                for k, v in r.items()
            }
            for r in records
        ]
    )


def make_real_box(
    root: Path, exp_id: str, records: list[dict[str, Any]]
) -> subprocess.Popen[str]:
    """Start a child that fills a box through xb.init; waits until it is written."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), exp_id, _as_json(records)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if exp_id in ("live", "killed"):
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n", child.stderr
    else:
        child.communicate(timeout=120)
    return child


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A results root with a box for every way a run ends, oldest first.

    ``live`` is held by a running process for the whole module; ``killed`` was
    SIGKILLed; ``exited`` left by ``os._exit`` after a flush; ``torn`` has a last
    line cut short; ``corrupt`` has an unreadable meta.json.
    """
    root = tmp_path_factory.mktemp("cli") / "results"
    root.mkdir()
    bad = make_box(root, "corrupt")
    (bad / "meta.json").write_text('{"exp_id": "corrupt", "proj')
    # Without a readable creation time, a box sorts by its directory's mtime.
    ten_days_ago = time.time() - 10 * 86400
    os.utime(bad, (ten_days_ago, ten_days_ago))
    make_real_box(root, "torn", [{"loss": 1.0 / (i + 1)} for i in range(20)])
    with open(root / "torn" / "logs" / "metrics.jsonl", "a") as f:
        f.write('{"step": 20, "time": 21.0, "lo')
    make_real_box(root, "exited", [{"loss": 0.5}] * 7)
    killed = make_real_box(root, "killed", [{"loss": 0.3}] * 42)
    killed.kill()
    killed.communicate(timeout=60)
    make_real_box(root, "failed", [{"loss": 2.0}])
    make_real_box(root, "fin", RECORDS)
    (root / "fin" / "notebooks" / "look.ipynb").write_text("{}")
    live = make_real_box(root, "live", [{"loss": 9.0}])
    yield root
    live.kill()
    live.communicate(timeout=60)


def test_ls_lists_newest_first_with_shown_status(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ls prints a header and one aligned line per box, newest first."""
    code, out, err = run(["ls", "--results-root", str(root)], capsys)

    lines = out.splitlines()
    header = lines[0].split()
    by_id = {line.split()[0]: line for line in lines[1:]}
    status_at = lines[0].index("STATUS")
    assert code == 0 and err == ""
    assert header == [
        "ID",
        "PROJECT",
        "TITLE",
        "STATUS",
        "CREATED",
        "DURATION",
        "STEP",
        "METRICS",
    ]
    assert list(by_id) == [
        "live",
        "fin",
        "failed",
        "killed",
        "exited",
        "torn",
        "corrupt",
    ]
    shown = {i: line[status_at:].split()[0] for i, line in by_id.items()}
    assert shown == {
        "live": "running",
        "fin": "finished",
        "failed": "failed",
        "killed": "stale",
        "exited": "stale",
        "torn": "finished",
        "corrupt": "corrupt",
    }
    assert "loss=0.125" in by_id["fin"] and "acc=0.75" in by_id["fin"]
    assert " 41 " in by_id["killed"] and " 6 " in by_id["exited"]
    assert "loss=0.05 " in by_id["torn"] + " " and " 19 " in by_id["torn"]


def test_ls_json_filters_and_keys(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ls --json is strict JSON; --project, --status and --keys narrow it."""
    code, out, _ = run(
        ["ls", "--results-root", str(root), "--json", "--keys", "acc,loss,n"], capsys
    )
    entries = json.loads(out, parse_constant=pytest.fail)
    fin = next(e for e in entries if e["id"] == "fin")
    killed = next(e for e in entries if e["id"] == "killed")

    assert code == 0
    assert fin["last_values"] == {"acc": 0.75, "loss": 0.125, "n": 7}
    assert fin["last_step"] == 4 and fin["duration_s"] >= 0
    assert killed["recorded_status"] == "running" and "gone" in killed["problem"]

    _, out, _ = run(
        ["ls", "--results-root", str(root), "--json", "--status", "stale,corrupt"],
        capsys,
    )
    assert [e["id"] for e in json.loads(out)] == ["killed", "exited", "corrupt"]
    _, out, _ = run(["ls", "--results-root", str(root), "--project", "other"], capsys)
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["failed"]
    _, out, _ = run(["ls", "--results-root", str(root), "-n", "2"], capsys)
    assert len(out.splitlines()) == 3


def test_ls_text_with_keys_has_a_column_per_key(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ls --keys shows one column per key, with '-' where a box lacks the key."""
    _, out, _ = run(["ls", "--results-root", str(root), "--keys", "acc,n"], capsys)

    lines = out.splitlines()
    by_id = {line.split()[0]: line.split() for line in lines[1:]}
    assert lines[0].split()[-2:] == ["acc", "n"]
    assert by_id["fin"][-2:] == ["0.75", "7"]
    assert by_id["failed"][-2:] == ["-", "-"]


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
    assert "  notebooks/look.ipynb  2 B" in out
    assert "last values (step 4):" in out and "  loss: 0.125" in out


def test_show_a_failed_and_a_killed_box(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """show gives the recorded error of a failed box and why a box is stale."""
    _, failed, _ = run(["show", "failed", "--results-root", str(root)], capsys)
    _, killed, _ = run(["show", "killed", "--results-root", str(root)], capsys)

    assert "status: failed" in failed and "error.type: RuntimeError" in failed
    assert "error.message: boom" in failed
    assert "status: stale (process " in killed and "is gone)" in killed
    assert "last values (step 41):" in killed


def test_show_a_corrupt_box_says_so(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """show on a box with a corrupt meta.json exits 1 and names the file."""
    code, out, err = run(["show", "corrupt", "--results-root", str(root)], capsys)

    assert code == 1
    assert "status: corrupt" in out
    assert err.count("\n") == 1 and "meta.json" in err and "corrupt" in err


def test_summary_of_a_corrupt_box_says_so(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """summary of a corrupt box prints what it knows and exits 1 naming the file."""
    code, out, err = run(["summary", "corrupt", "--results-root", str(root)], capsys)

    assert code == 1 and json.loads(out)["status"] == "corrupt"
    assert err.count("\n") == 1 and "meta.json" in err


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
        (["show", "f"], "matches several boxes: failed, fin"),
        (["metrics", "corrupt"], "has no metrics file"),
        (["plot", "live", "loss", "-o", "/nonexistent/dir/x.png"], "No such file"),
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


def test_unique_prefix_and_root_before_the_command(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A unique id prefix names a box; --results-root may precede the command."""
    code, out, _ = run(["--results-root", str(root), "show", "li"], capsys)

    assert code == 0 and "box: live" in out and "status: running" in out


def test_child_errors_have_no_traceback(tmp_path: Path) -> None:
    """Run as a program, a missing root gives one line and exit status 1."""
    result = run_child(["ls", "--results-root", str(tmp_path / "missing")])

    assert result.returncode == 1
    assert result.stderr.startswith("expbox: error: ")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_module_docstring_gives_the_real_usage_error_status() -> None:
    """The exit status the module docstring gives for a bad command line is real."""
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])

    doc = " ".join((cli.__doc__ or "").split())
    assert f"{exc.value.code} for an error the user can fix or a malformed" in doc


def test_usage_errors_are_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A malformed command line is one clear line on stderr and exit status 1."""
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])

    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("expbox: error: ") and "frobnicate" in err
    assert err.count("\n") == 1


def test_metrics_csv_round_trip(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CSV export has the union of keys in first-seen order and reads back equal."""
    code, out, _ = run(["metrics", "fin", "--results-root", str(root)], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))

    assert code == 0
    assert list(rows[0]) == ["step", "time", "loss", "acc", "note", "flag", "n"]
    assert [r["step"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert [r["loss"] for r in rows] == ["1.0", "0.5", "nan", "-inf", "0.125"]
    assert [r["acc"] for r in rows] == ["", "0.25", "inf", "", "0.75"]
    assert rows[1]["note"] == 'a, "b"' and rows[2]["flag"] == "True"
    for row, record in zip(rows, RECORDS):
        assert float(row["time"]) > 0
        for key, value in record.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(float(row[key]))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                assert float(row[key]) == value


def test_metrics_keys_and_jsonl(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--keys picks columns; jsonl output is strict JSON in the file's spelling."""
    _, out, _ = run(
        ["metrics", "fin", "--keys", "acc", "--results-root", str(root)], capsys
    )
    keyed = out.splitlines()
    code, out, _ = run(
        ["metrics", "fin", "--format", "jsonl", "--results-root", str(root)], capsys
    )
    lines = [json.loads(x, parse_constant=pytest.fail) for x in out.splitlines()]

    assert keyed[0] == "step,time,acc" and keyed[3].endswith(",inf")
    assert code == 0 and len(lines) == len(RECORDS)
    assert lines[2]["loss"] == "NaN" and lines[3]["loss"] == "-Infinity"
    assert lines[3]["acc"] is None and lines[1]["note"] == 'a, "b"'


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_metrics_key_never_logged_is_an_error_after_the_records(
    root: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """A --keys name no record holds exits 1 naming it, after streaming the records."""
    code, out, err = run(
        ["metrics", "fin", "--keys", "acc,nosuch", "--format", fmt]
        + ["--results-root", str(root)],
        capsys,
    )

    assert code == 1
    assert err == "expbox: error: box 'fin' never logged nosuch\n"
    assert len(out.splitlines()) == len(RECORDS) + (fmt == "csv")


def test_metrics_key_logged_once_is_no_error(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --keys name that a single record holds exports with exit status 0."""
    code, out, err = run(
        ["metrics", "fin", "--keys", "n", "--results-root", str(root)], capsys
    )

    assert code == 0 and err == ""
    assert [row["n"] for row in csv.DictReader(io.StringIO(out))] == [""] * 3 + [
        "7",
        "",
    ]


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
    assert 'pip install "expbox[plot]"' in result.stderr
    assert result.stderr.count("\n") == 1


def test_metrics_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """Piping the export into a reader that stops early is not an error."""
    box = make_box(
        tmp_path,
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
            str(tmp_path),
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
    assert set(pages) == {"live", "fin", "failed", "killed", "exited", "torn"}
    assert "skipping corrupt" in result.stderr
    fin = pages["fin"]
    assert fin["Name"]["title"][0]["text"]["content"] == "the good one"
    assert fin["ID"]["rich_text"][0]["text"]["content"] == "fin"
    assert fin["Status"] == {"select": {"name": "finished"}}
    assert fin["W&B"] == {"url": "https://wandb.ai/x/y/runs/z"}
    assert fin["loss"] == {"number": 0.125}
    assert pages["killed"]["Status"] == {"select": {"name": "stale"}}


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


BAD_PIDS = [2**32, -1, 0, "4242", 1.5, True]


def column(listing: str, name: str) -> dict[str, str]:
    """One column of an ``ls`` table by box id, read from the header's position."""
    header, *rows = listing.splitlines()
    start = header.index(name)
    return {row.split()[0]: (row[start:].split() or [""])[0] for row in rows}


@pytest.mark.parametrize("pid", BAD_PIDS)
@pytest.mark.parametrize("command", ["ls", "show", "metrics", "summary", "plot"])
def test_a_box_with_an_impossible_pid_breaks_no_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, pid: Any
) -> None:
    """A running box whose pid cannot name a process is shown like any other."""
    make_box(tmp_path, "good", records=[{"step": 0, "time": 1.0, "loss": 1.0}])
    make_box(
        tmp_path,
        "odd",
        records=[{"step": 3, "time": 1.0, "loss": 0.5}],
        status="running",
        finished_at=None,
        system={"host": HOST, "pid": pid},
    )
    argv = [command, "--results-root", str(tmp_path)]
    argv += [] if command == "ls" else ["odd"]
    argv += ["loss", "-o", str(tmp_path / "p.png")] if command == "plot" else []

    code, out, err = run(argv, capsys)

    assert code == 0, err
    if command == "ls":
        assert {line.split()[0] for line in out.splitlines()[1:]} == {"good", "odd"}
    if command in ("show", "summary"):
        assert "running" in out


def test_ls_goes_on_past_a_box_whose_metrics_file_is_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ls lists every box, marks the one whose metrics cannot be read, and notes why."""
    make_box(tmp_path, "good", records=[{"step": 4, "time": 1.0, "loss": 0.5}])
    bad = make_box(tmp_path, "bad")
    (bad / "logs" / "metrics.jsonl").mkdir()

    code, out, err = run(["ls", "--results-root", str(tmp_path)], capsys)
    _, as_json, _ = run(["ls", "--json", "--results-root", str(tmp_path)], capsys)

    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    entries = {entry["id"]: entry for entry in json.loads(as_json)}
    assert code == 0
    assert set(rows) == {"good", "bad"}
    assert "unreadable" in rows["bad"] and "loss=0.5" in rows["good"]
    assert err.count("\n") == 1 and "bad" in err and "Is a directory" in err
    assert entries["bad"]["metrics_problem"] == "Is a directory"
    assert entries["good"]["metrics_problem"] is None


@pytest.mark.parametrize("command", ["show", "metrics", "summary", "plot"])
def test_one_box_whose_metrics_file_is_a_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """show, metrics, summary and plot of such a box exit 1 with one line naming it."""
    bad = make_box(tmp_path, "bad")
    (bad / "logs" / "metrics.jsonl").mkdir()
    argv = [command, "--results-root", str(tmp_path), "bad"]
    argv += ["loss"] if command == "plot" else []

    code, _, err = run(argv, capsys)

    assert code == 1
    assert err.count("\n") == 1 and err.startswith("expbox: error: box 'bad'")
    assert "metrics.jsonl (Is a directory)" in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_ls_does_not_wait_on_a_fifo_in_a_box(tmp_path: Path) -> None:
    """A FIFO in place of meta.json or metrics.jsonl is reported, not read from."""
    make_box(tmp_path, "good")
    fifo_meta = tmp_path / "fifo_meta"
    (fifo_meta / "logs").mkdir(parents=True)
    os.mkfifo(fifo_meta / "meta.json")
    fifo_metrics = make_box(tmp_path, "fifo_metrics")
    os.mkfifo(fifo_metrics / "logs" / "metrics.jsonl")

    result = run_child(["ls", "--results-root", str(tmp_path)])

    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert result.returncode == 0, result.stderr
    assert set(rows) == {"good", "fifo_meta", "fifo_metrics"}
    assert " corrupt " in rows["fifo_meta"] and "unreadable" in rows["fifo_metrics"]


def test_ls_lists_every_malformed_box(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ls and ls --json go on past every kind of malformed meta.json."""
    malformed: dict[str, Any] = {
        "list": [1, 2],
        "string": "text",
        "number_time": {"status": "finished", "created_at": 1767261600},
        "year_one": {"status": "finished", "created_at": "0001-01-01T00:00:00+05:00"},
        "year_9999": {"status": "finished", "created_at": "9999-12-31T23:59:59-05:00"},
        "system_text": {"status": "running", "system": "node-1"},
        "interval_text": {"status": "running", "heartbeat_interval": "often"},
        "interval_negative": {"status": "running", "heartbeat_interval": -5},
        "wandb_list": {"status": "finished", "extra": {"wandb": ["x"]}},
        "title_list": {"status": "finished", "title": [1, {"a": None}]},
    }
    make_box(tmp_path, "good")
    for name, meta in malformed.items():
        (make_box(tmp_path, name) / "meta.json").write_text(json.dumps(meta))

    code, out, err = run(["ls", "--results-root", str(tmp_path)], capsys)
    json_code, as_json, _ = run(
        ["ls", "--json", "--results-root", str(tmp_path)], capsys
    )

    rows = column(out, "STATUS")
    assert code == 0 and json_code == 0, err
    assert set(rows) == {"good", *malformed}
    assert rows["list"] == "corrupt" and rows["string"] == "corrupt"
    assert rows["good"] == "finished" and rows["wandb_list"] == "finished"
    assert {entry["id"] for entry in json.loads(as_json)} == set(rows)
    for name in ("year_one", "wandb_list"):
        assert run(["summary", "--results-root", str(tmp_path), name], capsys)[0] == 0


ESC_TITLE = "\x1b[31mred\nsecond line"


def test_ls_and_show_escape_control_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Control characters in an id, title, project or metric name are printed
    escaped, keeping one line per box and no raw escape sequence."""
    make_box(
        tmp_path,
        "evil\x1b[2Jid",
        records=[{"step": 1, "time": 1.0, "lo\x1bss": 0.5, "note": "a\nb"}],
        title=ESC_TITLE,
        project="p\x1b]0;x\x07",
    )
    make_box(tmp_path, "plain")

    code, out, _ = run(["ls", "--results-root", str(tmp_path)], capsys)
    show_code, shown, _ = run(["show", "--results-root", str(tmp_path), "evil"], capsys)
    keys_code, keyed, _ = run(
        ["ls", "--results-root", str(tmp_path), "--keys", "lo\x1bss"], capsys
    )

    assert code == show_code == keys_code == 0
    for text in (out, shown, keyed):
        assert "\x1b" not in text and "\x07" not in text
    assert len(out.splitlines()) == 3
    assert "evil\\x1b[2Jid" in out and "\\x1b[31mred\\nsecond" in out
    assert "lo\\x1bss=0.5" in out and "note=a\\nb" in out
    assert "box: evil\\x1b[2Jid" in shown and "p\\x1b]0;x\\x07" in shown
    assert "title: \\x1b[31mred\\nsecond line\n" in shown
    assert column(keyed, "lo\\x1bss")["evil\\x1b[2Jid"] == "0.5"


def test_json_output_keeps_control_characters_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ls --json and summary stay JSON that reads back the exact text, with no raw
    control character on the terminal."""
    title = ESC_TITLE + "\x9b1m\u2028é"
    make_box(tmp_path, "a", title=title, records=[{"step": 0, "time": 1.0, "x": 1}])

    _, listed, _ = run(["ls", "--json", "--results-root", str(tmp_path)], capsys)
    _, summary, _ = run(["summary", "--results-root", str(tmp_path), "a"], capsys)

    for text in (listed, summary):
        assert not any(ch in text for ch in "\x1b\x9b\u2028")
    assert json.loads(listed)[0]["title"] == title
    assert json.loads(summary)["title"] == title
    assert "é" in summary


@pytest.mark.parametrize(
    ("finished_at", "shown"),
    [
        ("2026-01-01T10:00:00.400+00:00", "0.4s"),
        ("2026-01-01T10:00:00.990+00:00", "0.9s"),
        ("2026-01-01T10:00:00.000+00:00", "0.0s"),
        ("2026-01-01T10:00:07.900+00:00", "7s"),
        ("2026-01-01T10:02:05.000+00:00", "2m05s"),
    ],
)
def test_duration_shows_tenths_under_a_second(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], finished_at: str, shown: str
) -> None:
    """A run shorter than a second shows its duration in tenths, not as 0s."""
    make_box(tmp_path, "a", finished_at=finished_at)

    _, out, _ = run(["ls", "--results-root", str(tmp_path)], capsys)
    _, details, _ = run(["show", "--results-root", str(tmp_path), "a"], capsys)

    assert column(out, "DURATION") == {"a": shown}
    assert f"duration: {shown}\n" in details
