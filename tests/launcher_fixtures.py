"""Fixtures and helpers for the tests that start real launchers.

The SLURM fixture starts a private one-node cluster on 127.0.0.1 with
``scripts/slurm/start.sh`` in a temporary directory, on free ports, and stops it at
the end of the session. It never talks to a cluster it did not start, unless
``EXPBOX_TEST_SLURM_CONF`` names one on purpose (a CI job that started it already).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "launcher_scripts"
SLURM_SCRIPTS = REPO_ROOT / "scripts" / "slurm"

# Variables a launcher around pytest itself (a CI job under srun, a shell inside an
# allocation) would leak into the jobs the tests start and confuse rank detection.
_LEAKY_PREFIXES = ("SLURM_", "OMPI_", "PMIX_", "PMI_", "MV2_", "PALS_", "JSM_")
_LEAKY_NAMES = {
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "MPI_LOCALRANKID",
    "MPI_LOCALNRANKS",
}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a launched job: this checkout first, no leaked ranks."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_LEAKY_PREFIXES)
        and name not in _LEAKY_NAMES
        and not name.startswith("EXPBOX_")
    }
    # The launched scripts run from other directories; make them import the code
    # under test, not whatever else is installed.
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def require_binary(name: str) -> str:
    """The path of ``name``, or skip the test saying what is missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def run(
    cmd: list[str],
    *,
    env: dict[str, str],
    timeout: float = 180,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to completion and fail the test, with its output, if it fails."""
    result = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"{cmd[0]} exited with {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result


def loopback_only(cmd: list[str]) -> list[str]:
    """Wrap ``cmd`` in a network namespace that has nothing but loopback.

    torchrun's rendezvous and mpirun's daemons listen on every interface; inside
    this namespace there is no interface anyone else could reach.
    """
    shell = 'ip link set lo up && exec "$@"'
    return ["unshare", "--net", "sh", "-c", shell, "sh", *cmd]


@pytest.fixture(scope="session")
def netns() -> None:
    """Skip unless this process may create a loopback-only network namespace."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare or ip is not installed")
    probe = subprocess.run(
        loopback_only(["true"]), capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {probe.stderr.strip()}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The path of a running one-node cluster's slurm.conf."""
    for tool in ("srun", "sbatch", "scancel", "squeue", "scontrol"):
        require_binary(tool)
    given = os.environ.get("EXPBOX_TEST_SLURM_CONF")
    if given:
        yield given
        return
    for daemon in ("slurmctld", "slurmd", "munged"):
        require_binary(daemon)
    if os.geteuid() != 0:
        pytest.skip("starting a private SLURM cluster needs root")

    state = tmp_path_factory.mktemp("slurm")
    env = clean_env(
        EXPBOX_SLURM_CTLD_PORT=str(_free_port()),
        EXPBOX_SLURMD_PORT=str(_free_port()),
    )
    start = subprocess.run(
        ["sh", str(SLURM_SCRIPTS / "start.sh"), str(state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if start.returncode != 0:
        subprocess.run(
            ["sh", str(SLURM_SCRIPTS / "stop.sh"), str(state)], timeout=60, env=env
        )
        pytest.fail(f"the test SLURM cluster did not start:\n{start.stderr}")
    conf = start.stdout.strip().splitlines()[-1].split("=", 1)[1]
    try:
        yield conf
    finally:
        subprocess.run(
            ["sh", str(SLURM_SCRIPTS / "stop.sh"), "--purge", str(state)],
            capture_output=True,
            timeout=120,
            env=env,
        )


def slurm_env(conf: str, **extra: str) -> dict[str, str]:
    """A clean environment that points SLURM's commands at the test cluster."""
    return clean_env(SLURM_CONF=conf, **extra)


def python() -> str:
    return sys.executable


def read_boxes(root: Path) -> dict[str, dict[str, Any]]:
    """Every box under ``root``: its meta.json and its metrics records, by id."""
    boxes = {}
    for box in sorted(p for p in root.iterdir() if p.is_dir()):
        meta = json.loads((box / "meta.json").read_text())
        metrics = box / "logs" / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        boxes[box.name] = {"meta": meta, "records": [json.loads(x) for x in lines]}
    return boxes


def read_reports(report_dir: Path) -> list[dict[str, Any]]:
    """What each rank of ranked_run.py reported, sorted by rank."""
    reports = [json.loads(p.read_text()) for p in report_dir.glob("rank-*.json")]
    return sorted(reports, key=lambda r: (r["rank"] is None, r["rank"] or 0))
