"""The front door: init, load and save on real boxes in temporary directories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import expbox as xb
from expbox.errors import (
    BoxExistsError,
    BoxLockedError,
    BoxNotFoundError,
    CorruptMetaError,
)
from expbox.loggers import NullLogger


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_init_creates_the_box_layout_with_meta_and_config(tmp_path):
    """init makes every directory of the box, meta.json and the config snapshot."""
    ctx = xb.init(
        project="Demo",
        title="t",
        purpose="p",
        config={"lr": 0.1},
        results_root=tmp_path,
    )

    root = tmp_path / ctx.exp_id
    for name in ("artifacts", "figures", "logs", "notebooks"):
        assert (root / name).is_dir()
    assert (root / "artifacts" / "config.yaml").exists()
    meta = read_json(root / "meta.json")
    assert meta["status"] == "running"
    assert meta["project"] == "Demo" and meta["title"] == "t" and meta["purpose"] == "p"
    assert meta["created_at"][-6] in "+-" and meta["finished_at"] is None
    assert ctx.paths.root == root and ctx.paths.logs == root / "logs"
    assert ctx.config == {"lr": 0.1}
    ctx.close()


def test_save_finalizes_meta_and_load_gives_back_config_and_meta(tmp_path):
    """save writes status finished and load restores the same config and metadata."""
    config = {"model": {"layers": [64, 32]}, "lr": 1e-3, "name": "x"}
    ctx = xb.init(project="p", config=config, results_root=tmp_path)
    ctx.logger.log_metrics({"loss": 1.0}, step=0)
    ctx.meta.final_note = "done"
    ctx.meta.extra["seed"] = 7
    xb.save(ctx)

    loaded = xb.load(ctx.exp_id, results_root=tmp_path)

    assert loaded.config == config
    assert loaded.meta.status == "finished"
    assert loaded.meta.final_note == "done"
    assert loaded.meta.extra["seed"] == 7
    assert loaded.meta.finished_at is not None
    assert loaded.metrics()[0]["loss"] == 1.0
    ctx.close()


def test_save_twice_keeps_the_last_call(tmp_path):
    """A second save overwrites the first: the last call wins."""
    ctx = xb.init(project="p", results_root=tmp_path)
    ctx.meta.final_note = "first"
    xb.save(ctx)
    ctx.meta.final_note = "second"
    xb.save(ctx)

    assert read_json(ctx.paths.meta)["final_note"] == "second"
    ctx.close()


def test_context_manager_marks_failed_with_the_exception(tmp_path):
    """Leaving the with block by an exception leaves status failed with its type."""
    with (
        pytest.raises(RuntimeError),
        xb.init(project="p", results_root=tmp_path) as ctx,
    ):
        ctx.logger.log_metrics(loss=1.0)
        raise RuntimeError("diverged")

    meta = read_json(ctx.paths.meta)
    assert meta["status"] == "failed"
    assert meta["error"] == {"type": "RuntimeError", "message": "diverged"}


def test_context_manager_saves_on_a_clean_exit(tmp_path):
    """Leaving the with block normally saves the box as finished."""
    with xb.init(project="p", results_root=tmp_path) as ctx:
        ctx.logger.log_metrics(loss=1.0)

    assert read_json(ctx.paths.meta)["status"] == "finished"
    assert len(ctx.paths.metrics.read_text().splitlines()) == 1


def test_existing_explicit_exp_id_is_an_error_and_is_left_alone(tmp_path):
    """An explicit exp_id that exists raises, naming the box, and nothing changes."""
    ctx = xb.init(project="p", exp_id="run1", results_root=tmp_path)
    xb.save(ctx)
    ctx.close()
    before = ctx.paths.meta.read_bytes()

    with pytest.raises(BoxExistsError, match="run1"):
        xb.init(project="p", exp_id="run1", results_root=tmp_path)

    assert ctx.paths.meta.read_bytes() == before


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("exp_id", "a/b"),
        ("exp_id", "a\\b"),
        ("exp_id", ".."),
        ("exp_id", "x\x00y"),
        ("exp_id", ""),
        ("exp_id", ".hidden"),
        ("prefix", "../up"),
        ("suffix", "a/b"),
    ],
)
def test_unsafe_ids_are_refused_naming_the_argument(tmp_path, argument, value):
    """An id, prefix or suffix that is not one safe path component raises."""
    with pytest.raises(ValueError, match=argument):
        xb.init(project="p", results_root=tmp_path, **{argument: value})

    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_bad_logger_choice_lists_the_valid_ones(tmp_path):
    """An unknown logger name raises ValueError listing the choices."""
    with pytest.raises(ValueError, match="none, file, wandb"):
        xb.init(project="p", logger="tensorboard", results_root=tmp_path)


@pytest.mark.parametrize(
    ("name", "text", "pattern"),
    [
        ("bad.yaml", "a: [1, 2\nb: 3\n", "bad.yaml"),
        ("bad.json", '{"a": 1,\n "b": }\n', "bad.json"),
        ("conf.toml", "a = 1\n", "conf.toml"),
    ],
)
def test_bad_config_files_name_the_file_and_leave_no_box(tmp_path, name, text, pattern):
    """A malformed or unknown config file fails before any box is made."""
    path = tmp_path / name
    path.write_text(text)
    root = tmp_path / "results"

    with pytest.raises((ValueError, TypeError), match=pattern):
        xb.init(project="p", config=str(path), results_root=root)

    assert not root.exists() or list(root.iterdir()) == []


def test_missing_config_file_names_the_path(tmp_path):
    """A config path that does not exist raises naming the path."""
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        xb.init(project="p", config=str(tmp_path / "nope.yaml"), results_root=tmp_path)


def test_unstorable_config_value_fails_at_init_naming_its_key(tmp_path):
    """A config value that cannot be stored fails at init, before any box exists."""
    root = tmp_path / "results"
    with pytest.raises(TypeError, match="callback"):
        xb.init(project="p", config={"callback": print}, results_root=root)

    assert not root.exists() or list(root.iterdir()) == []


def test_load_of_a_missing_id_says_where_it_looked(tmp_path):
    """load of an id that does not exist names the results root it searched."""
    with pytest.raises(BoxNotFoundError, match=str(tmp_path.resolve())):
        xb.load("nothing-here", results_root=tmp_path)


def test_load_of_a_corrupt_meta_names_the_file_and_keeps_it(tmp_path):
    """A corrupt meta.json raises naming the file, which stays byte for byte."""
    ctx = xb.init(project="p", results_root=tmp_path)
    ctx.close()
    ctx.paths.meta.write_bytes(b'{"exp_id": "x", "proj')

    with pytest.raises(CorruptMetaError, match="meta.json"):
        xb.load(ctx.exp_id, results_root=tmp_path)

    assert ctx.paths.meta.read_bytes() == b'{"exp_id": "x", "proj'


def test_meta_that_cannot_be_encoded_leaves_the_previous_file_whole(tmp_path):
    """A save whose metadata cannot be encoded raises and keeps the old meta.json."""
    ctx = xb.init(project="p", results_root=tmp_path)
    xb.save(ctx)
    before = ctx.paths.meta.read_bytes()
    ctx.meta.extra["bad"] = object()

    with pytest.raises(TypeError):
        xb.save(ctx)

    assert ctx.paths.meta.read_bytes() == before
    assert [p.name for p in ctx.paths.root.iterdir() if p.name.startswith(".")] == []
    del ctx.meta.extra["bad"]
    ctx.close()


def test_resume_allow_continues_an_existing_box_and_keeps_history(tmp_path):
    """resume='allow' reopens the box, continues steps and records the earlier end."""
    first = xb.init(project="p", exp_id="job-7", resume="allow", results_root=tmp_path)
    for step in range(3):
        first.logger.log_metrics({"loss": float(step)})
    first.close()

    second = xb.init(project="p", exp_id="job-7", resume="allow", results_root=tmp_path)
    second.logger.log_metrics({"loss": 9.0})
    second.close()

    steps = [r["step"] for r in second.metrics()]
    assert steps == [0, 1, 2, 3]
    meta = read_json(second.paths.meta)
    assert meta["status"] == "finished"
    assert [h["status"] for h in meta["history"]] == ["finished"]


def test_resume_allow_creates_a_missing_box(tmp_path):
    """resume='allow' creates the box when it does not exist yet."""
    ctx = xb.init(project="p", exp_id="fresh", resume="allow", results_root=tmp_path)
    assert (tmp_path / "fresh" / "meta.json").exists()
    ctx.close()


def test_resume_must_refuses_a_missing_box(tmp_path):
    """resume='must' raises when there is nothing to continue."""
    with pytest.raises(BoxNotFoundError, match="gone"):
        xb.init(project="p", exp_id="gone", resume="must", results_root=tmp_path)


def test_load_with_file_logger_appends_and_goes_back_to_running(tmp_path):
    """load(logger='file') continues the metrics file and sets status running."""
    ctx = xb.init(project="p", results_root=tmp_path)
    ctx.logger.log_metrics({"a": 1}, step=10)
    ctx.close()

    again = xb.load(ctx.exp_id, results_root=tmp_path, logger="file")
    assert read_json(again.paths.meta)["status"] == "running"
    again.logger.log_metrics({"a": 2})
    again.close()

    assert [r["step"] for r in again.metrics()] == [10, 11]


def test_a_second_writer_of_the_same_box_is_refused(tmp_path):
    """Two writers of one box at once: the second gets BoxLockedError."""
    ctx = xb.init(project="p", exp_id="shared", results_root=tmp_path)

    with pytest.raises(BoxLockedError, match="shared"):
        xb.load("shared", results_root=tmp_path, logger="file")
    ctx.close()


def test_read_only_load_save_keeps_the_status(tmp_path):
    """A read-only load may edit meta and save without changing the status."""
    ctx = xb.init(project="p", results_root=tmp_path)
    xb.save(ctx, status="failed")
    ctx.close()

    again = xb.load(ctx.exp_id, results_root=tmp_path)
    again.meta.final_note = "looked at it later"
    xb.save(again)

    meta = read_json(ctx.paths.meta)
    assert meta["status"] == "failed"
    assert meta["final_note"] == "looked at it later"


def test_secrets_on_the_command_line_and_in_the_environment_stay_out(tmp_path):
    """Tokens in argv and secret-named environment variables never reach meta.json."""
    script = textwrap.dedent(
        f"""
        import expbox as xb
        ctx = xb.init(project="p", exp_id="sec", results_root={str(tmp_path)!r})
        xb.save(ctx)
        """
    )
    env = {
        **os.environ,
        "WANDB_API_KEY": "wandbsecret123",
        "AWS_SECRET_ACCESS_KEY": "awssecret456",
        "HF_TOKEN": "hfsecret789",
        "MY_PASSWORD": "pw000111",
    }
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "--api-key=argsecret1",
            "--token",
            "argsecret2",
        ],
        env=env,
        check=True,
        timeout=60,
    )

    text = (tmp_path / "sec" / "meta.json").read_text()
    for secret in (
        "wandbsecret123",
        "awssecret456",
        "hfsecret789",
        "pw000111",
        "argsecret1",
        "argsecret2",
    ):
        assert secret not in text


def test_public_names_are_pinned():
    """The front door exports exactly the documented names, sorted."""
    assert xb.__all__ == [
        "BoxExistsError",
        "BoxLockedError",
        "BoxNotFoundError",
        "CorruptMetaError",
        "CorruptMetricsError",
        "ExpContext",
        "ExpPaths",
        "ExpboxError",
        "ExperimentMeta",
        "MissingDependencyError",
        "WriterError",
        "__version__",
        "init",
        "load",
        "save",
    ]
    assert xb.__all__ == sorted(xb.__all__)


def test_import_expbox_stays_light():
    """import expbox pulls in no yaml, numpy, torch, matplotlib or wandb."""
    code = (
        "import sys, expbox; "
        "print(','.join(m for m in ('yaml','numpy','torch','matplotlib','wandb') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_read_only_save_keeps_what_the_run_wrote_meanwhile(tmp_path):
    """Saving a read-only copy changes only its own edits, not the run's later end."""
    run = xb.init(project="p", exp_id="live", results_root=tmp_path)
    viewer = xb.load("live", results_root=tmp_path)
    run.meta.final_note = "from the run"
    run.close()

    viewer.meta.env_note = "from the viewer"
    xb.save(viewer)

    meta = read_json(tmp_path / "live" / "meta.json")
    assert meta["status"] == "finished"
    assert meta["final_note"] == "from the run"
    assert meta["env_note"] == "from the viewer"
    assert meta["finished_at"] is not None


@pytest.mark.parametrize(
    ("value", "pattern"),
    [("a\nb", "control character"), ("x\x1b[31m", "control character")],
)
def test_ids_with_control_characters_are_refused(tmp_path, value, pattern):
    """An id holding a newline or an escape sequence is refused by name."""
    with pytest.raises(ValueError, match=pattern):
        xb.init(project="p", exp_id=value, results_root=tmp_path)


def test_an_overlong_id_is_refused_before_the_file_system_sees_it(tmp_path):
    """An id too long for a file name raises ValueError naming the argument."""
    with pytest.raises(ValueError, match="exp_id is 300 bytes"):
        xb.init(project="p", exp_id="x" * 300, results_root=tmp_path)


def test_results_root_that_is_a_file_or_empty_is_refused(tmp_path):
    """A results root that is a regular file, or an empty string, is a clear error."""
    afile = tmp_path / "afile"
    afile.write_text("keep me")

    with pytest.raises(ValueError, match="not a directory"):
        xb.init(project="p", results_root=afile)
    with pytest.raises(ValueError, match="must not be empty"):
        xb.init(project="p", results_root="")
    assert afile.read_text() == "keep me"


def test_opening_a_box_twice_in_one_process_says_so(tmp_path):
    """A second writer in the same process is told it is this process."""
    ctx = xb.init(project="p", exp_id="twice", results_root=tmp_path)

    with pytest.raises(BoxLockedError, match="this process"):
        xb.load("twice", results_root=tmp_path, logger="file")
    ctx.close()


def test_a_plain_save_after_an_explicit_status_wins_at_exit(tmp_path):
    """save(status='failed') then save(): the box closes finished, the last call."""
    ctx = xb.init(project="p", results_root=tmp_path)
    xb.save(ctx, status="failed")
    xb.save(ctx)
    ctx.close()

    assert read_json(ctx.paths.meta)["status"] == "finished"


def test_read_only_context_saves_through_its_method_and_its_with_block(tmp_path):
    """ctx.save(), leaving a with block and save(status=) all write a loaded box."""
    ctx = xb.init(project="p", exp_id="ro", results_root=tmp_path)
    ctx.close()

    loaded = xb.load("ro", results_root=tmp_path)
    loaded.meta.final_note = "via method"
    loaded.save()
    assert read_json(ctx.paths.meta)["final_note"] == "via method"

    with xb.load("ro", results_root=tmp_path) as again:
        again.meta.env_note = "in with"
    assert read_json(ctx.paths.meta)["env_note"] == "in with"

    xb.save(xb.load("ro", results_root=tmp_path), status="terminated")
    assert read_json(ctx.paths.meta)["status"] == "terminated"


@pytest.mark.parametrize("value", [0, -5, float("nan"), float("inf"), True, "10"])
def test_heartbeat_interval_must_be_a_positive_number(tmp_path, value):
    """A heartbeat interval that would spin or never beat is refused by name."""
    with pytest.raises(ValueError, match="heartbeat_interval"):
        xb.init(project="p", results_root=tmp_path, heartbeat_interval=value)

    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_resuming_a_box_moved_without_its_empty_folders(tmp_path):
    """A box whose logs/ folder went missing in a move resumes and logs."""
    ctx = xb.init(project="p", exp_id="moved", results_root=tmp_path, logger="none")
    ctx.close()
    for name in ("logs", "figures", "notebooks"):
        shutil.rmtree(tmp_path / "moved" / name)

    again = xb.load("moved", results_root=tmp_path, logger="file")
    again.logger.log_metrics({"x": 1.0})
    again.close()

    assert [r["x"] for r in again.metrics()] == [1.0]


def test_a_failed_box_tells_an_exit_code_aware_logger(tmp_path):
    """Closing a failed box passes exit_code=1 to a logger that accepts one."""
    seen = []

    class ExitCodeLogger(NullLogger):
        def close(self, timeout=None, *, exit_code=0):
            seen.append(exit_code)
            return 0

    ctx = xb.init(project="p", results_root=tmp_path / "b", logger="none")
    ctx.logger = ExitCodeLogger()
    with pytest.raises(RuntimeError), ctx:
        raise RuntimeError("boom")

    assert seen == [1]
