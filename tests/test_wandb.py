"""The W&B logger against a real wandb, in offline mode only.

Nothing here touches the network or the real home directory: every test runs with a
temporary ``HOME`` and W&B directories, ``WANDB_MODE=offline`` unless a test says
otherwise, and no API key. W&B's own record of a run (the ``.wandb`` transaction log)
is read back with the reader wandb ships, ``wandb leet inspect --json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

wandb = pytest.importorskip("wandb")

from expbox.paths import ExpPaths  # noqa: E402
from expbox.wandb_logger import WandbLogger  # noqa: E402
from expbox.wandb_mode import (  # noqa: E402
    choose_mode,
    find_credentials,
    make_run_id,
    masked_argv,
)

pytestmark = pytest.mark.timeout(180)

PROJECT = "expbox-tests"
# Variables that could point W&B at a real account or another run.
_CLEARED = (
    "WANDB_API_KEY",
    "WANDB_IDENTITY_TOKEN_FILE",
    "WANDB_BASE_URL",
    "WANDB_ENTITY",
    "WANDB_PROJECT",
    "WANDB_RUN_ID",
    "WANDB_RESUME",
    "WANDB_DISABLED",
    "WANDB_SERVICE",
    "NETRC",
)


@pytest.fixture(scope="module", autouse=True)
def wandb_env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A private, offline W&B environment for the whole module."""
    base = tmp_path_factory.mktemp("wandb-home")
    env = {
        "HOME": str(base),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(base / "wandb-dir"),
        "WANDB_CONFIG_DIR": str(base / "config"),
        "WANDB_CACHE_DIR": str(base / "cache"),
        "WANDB_DATA_DIR": str(base / "data"),
    }
    saved = dict(os.environ)
    for name in _CLEARED:
        os.environ.pop(name, None)
    os.environ.update(env)
    yield dict(os.environ)
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def fresh_wandb() -> Any:
    """Each test starts with no W&B service and leaves none behind."""
    yield
    with contextlib.suppress(Exception):
        wandb.teardown()


def make_box(tmp_path: Path, exp_id: str = "250124-1530") -> ExpPaths:
    paths = ExpPaths(tmp_path / exp_id)
    paths.root.mkdir(parents=True)
    paths.make_dirs()
    return paths


def read_local(paths: ExpPaths) -> list[dict[str, Any]]:
    lines = paths.metrics.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def read_run_log(paths: ExpPaths, run_dir: str | None = None) -> list[dict[str, Any]]:
    """The records of one offline run, read by wandb's own transaction log reader."""
    if run_dir is None:
        found = sorted(paths.logs.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(found) == 1, found
        log = found[0]
    else:
        (log,) = (paths.root / run_dir).glob("run-*.wandb")
    result = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line]


def history(records: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    rows = [r["history"] for r in records if r["type"] == "history"]
    return [(int(row.get("step", {}).get("num", 0)), row["item"]) for row in rows]


def run_child(code: str, env: dict[str, str], timeout: float = 120) -> Any:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=timeout,
    )


def test_records_and_figure_reach_the_box_and_the_run(tmp_path: Path) -> None:
    """Every record lands in metrics.jsonl and in the offline W&B run with its step."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = make_box(tmp_path)
    logger = WandbLogger(paths, exp_id="250124-1530", project=PROJECT, config={})
    for step in range(50):
        logger.log_metrics({"loss": 1.0 / (step + 1), "epoch": step // 10}, step=step)
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    logger.log_figure(fig, "curve", step=49)
    plt.close(fig)
    assert logger.close() == 0
    info = logger.meta_extra()["wandb"]

    local = read_local(paths)
    assert [r["step"] for r in local] == list(range(50))
    assert (paths.figures / "curve.png").is_file()
    assert info["mode"] == "offline"
    assert info["error"] is None
    assert info["run_id"].startswith("250124-1530-")
    assert info["dir"].startswith("logs/wandb/offline-run-")
    assert (paths.root / info["dir"]).is_dir()
    rows = history(read_run_log(paths))
    assert [step for step, _ in rows] == list(range(50))
    assert [item["loss"] for _, item in rows] == [r["loss"] for r in local]
    assert rows[-1][1]["curve._type"] == "image-file"


def test_same_steps_merge_and_lower_steps_stay_local(tmp_path: Path) -> None:
    """Records sharing a step form one W&B row; a lower step is kept only locally."""
    paths = make_box(tmp_path)
    logger = WandbLogger(paths, exp_id="250124-1530", project=PROJECT, config={})

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger.log_metrics({"a": 1}, step=0)
        logger.log_metrics({"b": 2}, step=0)
        logger.log_metrics({"a": 3}, step=5)
        logger.log_metrics({"a": 4}, step=3)
        logger.log_metrics({"a": 5}, step=2)
        logger.log_metrics({"a": 6}, step=6)
        logger.close()

    assert [r["step"] for r in read_local(paths)] == [0, 0, 5, 3, 2, 6]
    rows = history(read_run_log(paths))
    assert [step for step, _ in rows] == [0, 5, 6]
    assert rows[0][1]["a"] == 1 and rows[0][1]["b"] == 2
    assert logger.meta_extra()["wandb"]["skipped"] == 2
    assert len([w for w in caught if "increasing steps" in str(w.message)]) == 1


def test_resume_reuses_the_run_id(tmp_path: Path) -> None:
    """A box resumed with its stored run id continues the same W&B run."""
    paths = make_box(tmp_path)
    first = WandbLogger(paths, exp_id="250124-1530", project=PROJECT, config={})
    first.log_metrics({"loss": 1.0}, step=0)
    first.close()
    run_id = first.meta_extra()["wandb"]["run_id"]

    second = WandbLogger(
        paths,
        exp_id="250124-1530",
        project=PROJECT,
        config={},
        resume_run_id=run_id,
        start_step=1,
    )
    for _ in range(3):
        second.log_metrics({"loss": 0.5})
    second.close()
    info = second.meta_extra()["wandb"]

    assert info["run_id"] == run_id
    records = read_run_log(paths, info["dir"])
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["run_id"] == run_id
    assert run["resume"] is True
    assert [step for step, _ in history(records)] == [1, 2, 3]


def test_config_with_rich_types_reaches_wandb(tmp_path: Path) -> None:
    """Path, datetime, Enum and NumPy values in the config do not break wandb.init."""
    import datetime as dt
    import enum

    np = pytest.importorskip("numpy")

    class Color(enum.Enum):
        RED = "red"

    config = {
        "data": Path("/data/train.csv"),
        "when": dt.datetime(2025, 1, 24, 15, 30, tzinfo=dt.timezone.utc),
        "color": Color.RED,
        "lr": np.float32(0.5),
        "layers": [np.int64(3), {"drop": np.bool_(True)}],
    }
    paths = make_box(tmp_path)

    logger = WandbLogger(paths, exp_id="250124-1530", project=PROJECT, config=config)
    logger.close()

    assert logger.meta_extra()["wandb"]["error"] is None
    (run,) = [r["run"] for r in read_run_log(paths) if r["type"] == "run"]
    stored = run["config"]["update"]
    assert stored["data"] == "/data/train.csv"
    assert stored["when"].startswith("2025-01-24T15:30:00")
    assert stored["color"] == "red"
    assert stored["lr"] == 0.5
    assert stored["layers"] == [3, {"drop": True}]


def test_options_expbox_sets_are_refused_before_any_run(tmp_path: Path) -> None:
    """wandb_options cannot move W&B's files or name an argument wandb.init lacks."""
    paths = make_box(tmp_path)

    with pytest.raises(ValueError, match="'dir'"):
        WandbLogger(
            paths, exp_id="x", project=PROJECT, wandb_options={"dir": str(tmp_path)}
        )
    with pytest.raises(TypeError, match="'tag'"):
        WandbLogger(paths, exp_id="x", project=PROJECT, wandb_options={"tag": "a"})

    assert not list(paths.logs.glob("wandb*"))


def test_run_id_is_safe_for_wandb_and_unique_per_box() -> None:
    """Characters W&B may refuse become dashes and a random tag keeps ids apart."""
    assert make_run_id("mouse A/kidney.01", tag="abc123") == "mouse-A-kidney-01-abc123"
    assert make_run_id("250124-1530") != make_run_id("250124-1530")
    assert len(make_run_id("x" * 200, tag="abc123")) == 48 + 7


@pytest.mark.parametrize(
    ("options", "environ", "netrc_host", "interactive", "expected"),
    [
        ({}, {}, None, False, "offline"),
        ({}, {}, None, True, None),
        ({"mode": "online"}, {}, None, False, None),
        ({}, {"WANDB_MODE": "disabled"}, None, False, None),
        ({}, {"WANDB_API_KEY": "k" * 40}, None, False, None),
        ({}, {}, "api.wandb.ai", False, None),
        ({}, {}, "other.example", False, "offline"),
        ({}, {"WANDB_BASE_URL": "https://w.example:8080"}, "w.example", False, None),
    ],
)
def test_mode_follows_user_choice_then_credentials_then_terminal(
    tmp_path: Path,
    options: dict[str, Any],
    environ: dict[str, str],
    netrc_host: str | None,
    interactive: bool,
    expected: str | None,
) -> None:
    """Offline is forced only without a user choice, a key or a terminal."""
    env = {"HOME": str(tmp_path), **environ}
    if netrc_host is not None:
        netrc = tmp_path / ".netrc"
        netrc.write_text(f"machine {netrc_host}\n  login user\n  password {'p' * 40}\n")
        netrc.chmod(0o600)

    mode, reason = choose_mode(options, {}, env, interactive=interactive)

    assert mode == expected
    assert (reason is None) == (expected is None)


def test_credentials_are_named_never_returned(tmp_path: Path) -> None:
    """find_credentials says where a key is, never what it is."""
    secret = "s3cr3t" * 7
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine api.wandb.ai login user password {secret}\n")
    netrc.chmod(0o600)

    from_env = find_credentials({"WANDB_API_KEY": secret, "HOME": str(tmp_path)})
    from_file = find_credentials({"HOME": str(tmp_path)})

    assert from_env == "WANDB_API_KEY"
    assert from_file == "netrc"


def test_credentials_for_the_server_wandb_login_saved_are_found(
    tmp_path: Path,
) -> None:
    """A netrc entry for the host in W&B's settings file counts as credentials."""
    settings = tmp_path / ".config" / "wandb" / "settings"
    settings.parent.mkdir(parents=True)
    settings.write_text("[default]\nbase_url = https://wandb.example:8443\n")
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine wandb.example login user password {'p' * 40}\n")
    netrc.chmod(0o600)

    found = find_credentials({"HOME": str(tmp_path)})
    mode, _ = choose_mode({}, {}, {"HOME": str(tmp_path)}, interactive=False)

    assert found == "netrc"
    assert mode is None


def test_no_credentials_and_no_terminal_goes_offline_at_once(
    tmp_path: Path, wandb_env: dict[str, str]
) -> None:
    """Without a key or a terminal the run is made offline, with one warning."""
    env = dict(wandb_env)
    del env["WANDB_MODE"]
    code = f"""
        import json, warnings
        from pathlib import Path
        from expbox.paths import ExpPaths
        from expbox.wandb_logger import WandbLogger
        paths = ExpPaths(Path({str(tmp_path / "box")!r}))
        paths.root.mkdir()
        paths.make_dirs()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            logger = WandbLogger(paths, exp_id="box", project="p", config={{}})
        logger.log_metrics({{"loss": 1.0}}, step=0)
        logger.close()
        print(json.dumps({{"info": logger.meta_extra()["wandb"],
                          "warnings": [str(w.message) for w in caught]}}))
    """

    result = run_child(code, env, timeout=120)

    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["info"]["mode"] == "offline"
    assert "no W&B credentials" in out["info"]["offline_reason"]
    assert len([w for w in out["warnings"] if "W&B runs offline" in w]) == 1


def test_user_mode_is_respected(tmp_path: Path, monkeypatch: Any) -> None:
    """WANDB_MODE=disabled gives a disabled run and no offline warning."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    paths = make_box(tmp_path)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = WandbLogger(paths, exp_id="250124-1530", project=PROJECT)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.close()

    assert logger.meta_extra()["wandb"]["mode"] == "disabled"
    assert not [w for w in caught if "offline" in str(w.message)]
    assert len(read_local(paths)) == 1


def test_killed_wandb_service_keeps_local_records(
    tmp_path: Path, wandb_env: dict[str, str]
) -> None:
    """Killing W&B's service mid-run costs W&B data only, reported once."""
    code = f"""
        import json, warnings
        from pathlib import Path
        import psutil
        from expbox.paths import ExpPaths
        from expbox.wandb_logger import WandbLogger
        paths = ExpPaths(Path({str(tmp_path / "box")!r}))
        paths.root.mkdir()
        paths.make_dirs()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            logger = WandbLogger(paths, exp_id="box", project="p", config={{}})
            for step in range(20):
                logger.log_metrics({{"loss": step}}, step=step)
            logger.flush()
            core = [p for p in psutil.Process().children(recursive=True)
                    if p.name() == "wandb-core"]
            assert core, "no wandb-core child"
            for p in core:
                p.kill()
            psutil.wait_procs(core, timeout=30)
            for step in range(20, 220):
                logger.log_metrics({{"loss": step}}, step=step)
            logger.flush()
            for step in range(220, 230):
                logger.log_metrics({{"loss": step}}, step=step)
            lost = logger.close()
        print(json.dumps({{"lost": lost, "info": logger.meta_extra()["wandb"],
                          "warnings": [str(w.message) for w in caught]}}))
    """

    result = run_child(code, wandb_env, timeout=120)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["lost"] == 0
    assert out["info"]["error"]
    assert len([w for w in out["warnings"] if "W&B stopped" in w]) == 1
    local = read_local(ExpPaths(tmp_path / "box"))
    assert [r["step"] for r in local] == list(range(230))


def test_exit_without_close_sends_every_record(
    tmp_path: Path, wandb_env: dict[str, str]
) -> None:
    """At interpreter exit the last records reach W&B before it shuts down."""
    code = f"""
        from pathlib import Path
        from expbox.paths import ExpPaths
        from expbox.wandb_logger import WandbLogger
        paths = ExpPaths(Path({str(tmp_path / "box")!r}))
        paths.root.mkdir()
        paths.make_dirs()
        logger = WandbLogger(paths, exp_id="box", project="p", config={{}})
        for step in range(300):
            logger.log_metrics({{"loss": step}}, step=step)
    """

    result = run_child(code, wandb_env, timeout=120)

    assert result.returncode == 0, result.stderr
    paths = ExpPaths(tmp_path / "box")
    assert len(read_local(paths)) == 300
    records = read_run_log(paths)
    assert [step for step, _ in history(records)] == list(range(300))
    assert any(r["type"] == "exit" for r in records)


def test_uncaught_exception_finishes_the_run_as_failed(
    tmp_path: Path, wandb_env: dict[str, str]
) -> None:
    """A script that dies of an exception leaves a W&B run with exit code 1."""
    code = f"""
        from pathlib import Path
        from expbox.paths import ExpPaths
        from expbox.wandb_logger import WandbLogger
        paths = ExpPaths(Path({str(tmp_path / "box")!r}))
        paths.root.mkdir()
        paths.make_dirs()
        logger = WandbLogger(paths, exp_id="box", project="p", config={{}})
        logger.log_metrics({{"loss": 1.0}}, step=0)
        raise RuntimeError("diverged")
    """

    result = run_child(code, wandb_env, timeout=120)

    assert result.returncode == 1
    assert "diverged" in result.stderr
    records = read_run_log(ExpPaths(tmp_path / "box"))
    assert [step for step, _ in history(records)] == [0]
    (exit_record,) = [r["exit"] for r in records if r["type"] == "exit"]
    assert exit_record["exit_code"] == 1


def test_missing_wandb_names_the_install_command(wandb_env: dict[str, str]) -> None:
    """require_wandb raises MissingDependencyError with the pip command."""
    code = """
        import sys
        sys.modules["wandb"] = None  # what an interpreter without wandb sees
        from expbox.errors import MissingDependencyError
        from expbox.wandb_logger import require_wandb
        try:
            require_wandb()
        except MissingDependencyError as exc:
            print(exc)
    """

    result = run_child(code, wandb_env, timeout=60)

    assert result.returncode == 0, result.stderr
    assert 'pip install "expbox[wandb]"' in result.stdout


def test_init_with_wandb_records_the_run_and_load_resumes_it(tmp_path: Path) -> None:
    """xb.init(logger="wandb") stores the run in meta.json; xb.load continues it."""
    import expbox as xb

    ctx = xb.init(
        project=PROJECT,
        title="smoke",
        config={"lr": 0.1},
        logger="wandb",
        results_root=tmp_path,
        exp_id="e2e",
        wandb={"tags": ["smoke"]},
    )
    for step in range(5):
        ctx.logger.log_metrics({"loss": float(step)}, step=step)
    ctx.close()
    meta = json.loads((tmp_path / "e2e" / "meta.json").read_text(encoding="utf-8"))
    info = meta["extra"]["wandb"]

    again = xb.load("e2e", results_root=tmp_path, logger="wandb")
    again.logger.log_metrics({"loss": 9.0})
    run_id = again.logger.run.id
    again.close()
    meta = json.loads((tmp_path / "e2e" / "meta.json").read_text(encoding="utf-8"))

    assert info["mode"] == "offline"
    assert info["error"] is None
    assert info["run_id"].startswith("e2e-")
    assert not Path(info["dir"]).is_absolute()
    assert run_id == info["run_id"]
    assert meta["extra"]["wandb"]["run_id"] == info["run_id"]
    assert meta["extra"]["wandb"]["dir"] != info["dir"]
    paths = ExpPaths(tmp_path / "e2e")
    first = read_run_log(paths, info["dir"])
    (run,) = [r["run"] for r in first if r["type"] == "run"]
    assert run["tags"] == ["smoke"]
    assert run["config"]["update"]["lr"] == 0.1
    assert [step for step, _ in history(first)] == list(range(5))
    second = read_run_log(paths, meta["extra"]["wandb"]["dir"])
    assert [step for step, _ in history(second)] == [5]


def test_records_beyond_the_w_and_b_backlog_stay_in_the_box(tmp_path: Path) -> None:
    """A batch arriving while W&B is a full backlog behind is counted, not queued."""
    from expbox.wandb_sink import WandbSink

    run = wandb.init(project=PROJECT, dir=str(tmp_path), reinit="create_new")
    sink = WandbSink(run, wandb, exp_id="backlog", capacity=500)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # W&B takes far longer than this call to log 500 rows, so the backlog
        # is still full when the next batch arrives.
        sink.on_records([(i, 0.0, {"x": i}) for i in range(500)])
        sink.on_records([(500, 0.0, {"x": 500}), (501, 0.0, {"x": 501})])
        sink.finish()

    assert sink.dropped == 2
    assert sink.error is None
    assert len([w for w in caught if "records behind" in str(w.message)]) == 1


def test_two_open_boxes_get_two_runs(tmp_path: Path) -> None:
    """A second box in the same process neither finishes nor joins the first run."""
    first_paths = make_box(tmp_path, "first")
    second_paths = make_box(tmp_path, "second")
    first = WandbLogger(first_paths, exp_id="first", project=PROJECT)
    second = WandbLogger(second_paths, exp_id="second", project=PROJECT)

    for step in range(3):
        first.log_metrics({"a": step}, step=step)
        second.log_metrics({"b": step}, step=step)
    first.close()
    second.close()

    assert first.run.id != second.run.id
    assert first.meta_extra()["wandb"]["error"] is None
    assert second.meta_extra()["wandb"]["error"] is None
    assert [s for s, _ in history(read_run_log(first_paths))] == [0, 1, 2]
    assert [s for s, _ in history(read_run_log(second_paths))] == [0, 1, 2]


def test_secrets_on_the_command_line_or_in_the_environment_stay_out_of_the_box(
    tmp_path: Path, wandb_env: dict[str, str]
) -> None:
    """W&B's files in the box hold the masked command line and no secret value."""
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, sys
            import expbox as xb
            argv = sys.argv
            ctx = xb.init(
                project="p", logger="wandb", results_root={str(tmp_path / "runs")!r}
            )
            ctx.logger.log_metrics({{"loss": 1.0}}, step=0)
            ctx.close()
            print(json.dumps({{"same": sys.argv is argv, "argv": sys.argv}}))
            """
        ),
        encoding="utf-8",
    )
    argv = ["--api-key=APIKEYSECRETVAL", "--token", "TOKVAL", "--lr", "0.1"]
    env = {**wandb_env, "MY_SECRET_TOKEN": "ENVSECRETVAL"}

    result = subprocess.run(
        [sys.executable, str(script), *argv],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "same": True,
        "argv": [str(script), *argv],
    }
    (box,) = (tmp_path / "runs").iterdir()
    files = [path for path in box.rglob("*") if path.is_file()]
    assert any(path.suffix == ".wandb" for path in files)
    secrets = (b"APIKEYSECRETVAL", b"TOKVAL", b"ENVSECRETVAL")
    leaks = [
        (str(path.relative_to(box)), secret)
        for path in files
        for secret in secrets
        if secret in path.read_bytes()
    ]
    assert leaks == []
    meta = json.loads((box / "meta.json").read_text(encoding="utf-8"))
    records = read_run_log(ExpPaths(box))
    (environment,) = [
        r["environment"]
        for r in records
        if r["type"] == "environment" and "args" in r["environment"]
    ]
    assert environment["args"] == meta["system"]["command"][1:]
    assert environment["args"] == ["--api-key=***", "--token", "***", "--lr", "0.1"]
    assert environment["host"] and environment["python"]


def test_masked_argv_puts_back_the_original_list(monkeypatch: Any) -> None:
    """sys.argv is masked inside the block only, and a replacement made there stays."""
    original = ["train.py", "--password", "hunter2", "--lr", "0.1"]
    monkeypatch.setattr(sys, "argv", original)

    with masked_argv():
        inside = sys.argv
        with masked_argv():
            nested = sys.argv
        after_nested = sys.argv
    after = sys.argv
    with masked_argv():
        sys.argv = replaced = ["other.py"]
    after_replace = sys.argv
    plain = ["train.py", "--lr", "0.1"]
    monkeypatch.setattr(sys, "argv", plain)
    with masked_argv():
        untouched = sys.argv

    assert inside == ["train.py", "--password", "***", "--lr", "0.1"]
    assert nested is inside and after_nested is inside
    assert after is original
    assert original[2] == "hunter2"
    assert sys.argv is plain and untouched is plain
    assert after_replace is replaced
