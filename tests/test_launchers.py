"""Real launchers start real ranks: one box per job, nothing from other ranks.

torchrun and mpirun run inside a network namespace with only loopback, so what they
listen on is reachable from nowhere. SLURM runs as a private one-node cluster on
127.0.0.1 (see scripts/slurm/). Each test skips, saying why, when its launcher is
not installed.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from launcher_fixtures import (
    SCRIPTS,
    clean_env,
    loopback_only,
    netns,
    python,
    read_boxes,
    read_reports,
    require_binary,
    run,
    slurm_cluster,
    slurm_env,
)

pytestmark = [pytest.mark.launcher, pytest.mark.timeout(300)]

# Re-exported fixtures: pytest finds them by name in this module.
__all__ = ["netns", "slurm_cluster"]

STEPS = 200
RANKED = str(SCRIPTS / "ranked_run.py")


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    results, reports = tmp_path / "results", tmp_path / "reports"
    results.mkdir()
    reports.mkdir()
    return results, reports


def _assert_one_box_from_rank_zero(
    results: Path, launcher: str, world_size: int | None
) -> dict[str, Any]:
    """One box, with every record of rank 0 in order and nothing from the others."""
    boxes = read_boxes(results)
    assert len(boxes) == 1, sorted(boxes)
    (box,) = boxes.values()

    records = box["records"]
    assert [r["step"] for r in records] == list(range(STEPS))
    assert {r["from_rank"] for r in records} == {0}
    assert box["meta"]["status"] == "finished"
    assert box["meta"]["distributed"] == {
        "rank": 0,
        "world_size": world_size,
        "launcher": launcher,
    }
    return box


def _assert_other_ranks_inert(reports: list[dict[str, Any]], world: int) -> None:
    assert [r["rank"] for r in reports] == list(range(world))
    assert [r["is_main"] for r in reports] == [True] + [False] * (world - 1)
    for report in reports[1:]:
        assert report["threads_after_logging"] == report["threads_before"]
    # Rank 0 runs the writer thread; that is how the check above could fail.
    assert len(reports[0]["threads_after_init"]) > len(reports[0]["threads_before"])


def test_torchrun_four_ranks_write_one_box(tmp_path: Path, netns: None) -> None:
    """torchrun with four gloo ranks: one box holding all of rank 0's records only."""
    torchrun = require_binary("torchrun")
    results, reports = _dirs(tmp_path)
    env = clean_env(EXPBOX_EXP_ID="ddp-run")

    cmd = [torchrun, "--standalone", "--nproc_per_node=4", RANKED]
    run(loopback_only([*cmd, str(results), str(reports), "--gloo"]), env=env)

    box = _assert_one_box_from_rank_zero(results, "torchrun", 4)
    assert box["meta"]["exp_id"] == "ddp-run"
    found = read_reports(reports)
    _assert_other_ranks_inert(found, 4)
    assert found[1]["exp_id"] == "ddp-run"


def test_mpirun_four_ranks_write_one_box(tmp_path: Path, netns: None) -> None:
    """OpenMPI's mpirun with four ranks and no shared id: one box, from rank 0."""
    mpirun = require_binary("mpirun")
    results, reports = _dirs(tmp_path)

    cmd = [mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "4"]
    run(
        loopback_only([*cmd, python(), RANKED, str(results), str(reports)]),
        env=clean_env(),
    )

    _assert_one_box_from_rank_zero(results, "openmpi", 4)
    found = read_reports(reports)
    _assert_other_ranks_inert(found, 4)
    # Without a shared id the other ranks cannot know rank 0's generated one.
    assert [r["exp_id"] for r in found[1:]] == [None, None, None]


def test_srun_four_tasks_write_one_box(tmp_path: Path, slurm_cluster: str) -> None:
    """srun -n 4: one box from task 0; tasks 1..3 start no thread."""
    results, reports = _dirs(tmp_path)

    cmd = ["srun", "-n", "4", python(), RANKED, str(results), str(reports)]
    run(cmd, env=slurm_env(slurm_cluster), cwd=tmp_path)

    _assert_one_box_from_rank_zero(results, "slurm", 4)
    _assert_other_ranks_inert(read_reports(reports), 4)


def _inner_launcher(name: str, results: Path, reports: Path) -> tuple[list[str], str]:
    """The command of a launcher started by srun, and the family that should win."""
    script = [RANKED, str(results), str(reports)]
    if name == "torchrun":
        torchrun = require_binary("torchrun")
        return [torchrun, "--standalone", "--nproc_per_node=2", *script, "--gloo"], name
    mpirun = require_binary("mpirun")
    # Inside an allocation mpirun would start its daemons through srun, which cannot
    # be reached from the loopback-only namespace; keep it on this node.
    options = ["--allow-run-as-root", "--oversubscribe", "-np", "2"]
    options += ["--mca", "plm", "isolated", "--mca", "ras", "^slurm"]
    return [mpirun, *options, python(), *script], "openmpi"


@pytest.mark.parametrize("inner", ["torchrun", "mpirun"])
def test_launcher_inside_srun_writes_one_box(
    tmp_path: Path, slurm_cluster: str, netns: None, inner: str
) -> None:
    """The inner launcher's rank wins over the SLURM_PROCID=0 its children inherit."""
    results, reports = _dirs(tmp_path)
    inner_cmd, family = _inner_launcher(inner, results, reports)

    cmd = ["srun", "-n", "1", "-c", "2", *loopback_only(inner_cmd)]
    run(cmd, env=slurm_env(slurm_cluster), cwd=tmp_path)

    _assert_one_box_from_rank_zero(results, family, 2)
    _assert_other_ranks_inert(read_reports(reports), 2)


def test_sbatch_array_tasks_get_their_own_boxes(
    tmp_path: Path, slurm_cluster: str
) -> None:
    """Four array tasks running at once get four boxes named after their task ids."""
    results, checkin = _dirs(tmp_path)
    script = tmp_path / "array.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"exec {python()} {SCRIPTS / 'array_task.py'} {results} {checkin} --tasks 4\n"
    )
    env = slurm_env(slurm_cluster)

    submitted = run(
        [
            "sbatch",
            "--parsable",
            "--array=0-3",
            "-o",
            str(tmp_path / "task-%a.out"),
            str(script),
        ],
        env=env,
        cwd=tmp_path,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    _wait_for_job_end(job_id, env, timeout=120)

    boxes = read_boxes(results)
    outputs = {p.name: p.read_text() for p in tmp_path.glob("task-*.out")}
    assert len(boxes) == 4, (sorted(boxes), outputs)
    suffixes = sorted(name.rsplit("-", 1)[-1] for name in boxes)
    assert suffixes == ["task0", "task1", "task2", "task3"]
    for name, box in boxes.items():
        assert name.startswith("sweep-")
        assert box["meta"]["status"] == "finished"
        task = int(name.rsplit("task", 1)[-1])
        assert {r["task"] for r in box["records"]} == {task}
        assert len(box["records"]) == 100


# How the batch script starts python decides who receives scancel's signal. Without
# --batch or --full, scancel signals job steps only, which reaches "srun python". With
# --batch it signals the batch shell alone, which is python only if the script execs
# it; a shell that merely waits for python would die and take python down with it.
TERM_RECIPES = {
    "exec": ("exec", ["--batch"]),
    "srun": ("srun", []),
}


@pytest.mark.parametrize("recipe", sorted(TERM_RECIPES))
def test_scancel_term_leaves_a_terminated_box(
    tmp_path: Path, slurm_cluster: str, recipe: str
) -> None:
    """SIGTERM from scancel leaves a terminated box holding every record logged."""
    start, scancel_options = TERM_RECIPES[recipe]
    results = tmp_path / "results"
    results.mkdir()
    ready = tmp_path / "ready"
    script = tmp_path / "long.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"{start} {python()} {SCRIPTS / 'sigterm_run.py'} {results} {ready}"
        " --burst 1000\n"
    )
    env = slurm_env(slurm_cluster)
    output = tmp_path / "long.out"

    submitted = run(
        ["sbatch", "--parsable", "-o", str(output), str(script)], env=env, cwd=tmp_path
    )
    job_id = submitted.stdout.strip()
    _wait_for_file(ready, job_id, env, output)
    exp_id, burst, _pid = ready.read_text().split()
    run(["scancel", *scancel_options, "--signal=TERM", job_id], env=env)
    _wait_for_job_end(job_id, env, timeout=60)

    (box,) = read_boxes(results).values()
    steps = [r["step"] for r in box["records"]]
    last_returned = int(ready.with_suffix(".last").read_text())
    assert box["meta"]["exp_id"] == exp_id
    assert box["meta"]["status"] == "terminated", output.read_text()
    assert steps == list(range(len(steps)))
    assert last_returned >= int(burst)
    # The signal may land after log_metrics queued a record but before it returned.
    assert steps[-1] - last_returned in (0, 1)
    if recipe == "exec":
        job = run(["scontrol", "show", "job", job_id], env=env).stdout
        assert "ExitCode=0:15" in job, job


def _job_state(job_id: str, env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.split()


def _wait_for_job_end(job_id: str, env: dict[str, str], timeout: float) -> None:
    """Poll squeue until the job and all its array tasks have left the queue."""
    deadline = time.monotonic() + timeout
    while _job_state(job_id, env):
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id], env=env, timeout=30)
            pytest.fail(f"job {job_id} still queued or running after {timeout}s")
        time.sleep(0.2)


def _wait_for_file(path: Path, job_id: str, env: dict[str, str], log: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline or not _job_state(job_id, env):
            subprocess.run(["scancel", job_id], env=env, timeout=30)
            output = log.read_text() if log.exists() else "(no output)"
            pytest.fail(f"job {job_id} never became ready:\n{output}")
        time.sleep(0.1)
