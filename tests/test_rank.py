"""Rank detection: the order of sources, pinned by tables, and its error messages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from expbox.rank import RankInfo, detect_rank

REPO_ROOT = Path(__file__).resolve().parent.parent

# Every variable that can set a rank, so a test can clear what a launcher around
# pytest itself may have set.
RANK_VARIABLES = (
    "EXPBOX_RANK",
    "RANK",
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "PMI_RANK",
    "MV2_COMM_WORLD_RANK",
    "PALS_RANKID",
    "SLURM_PROCID",
    "JSM_NAMESPACE_RANK",
)


def _clear_rank_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# What each launcher family exports to one process, alone: (environment, expected
# rank, world size, local rank, launcher).
SINGLE_LAUNCHERS = {
    "torchrun": (
        {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"},
        RankInfo(3, 4, 1, "torchrun"),
    ),
    "openmpi": (
        {
            "OMPI_COMM_WORLD_RANK": "2",
            "OMPI_COMM_WORLD_SIZE": "4",
            "OMPI_COMM_WORLD_LOCAL_RANK": "2",
            "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
            # OpenMPI 4 and later also export the PMIx rank.
            "PMIX_RANK": "2",
        },
        RankInfo(2, 4, 2, "openmpi"),
    ),
    "pmix only": ({"PMIX_RANK": "5"}, RankInfo(5, None, None, "pmix")),
    "mpich": (
        {"PMI_RANK": "1", "PMI_SIZE": "8", "MPI_LOCALRANKID": "1"},
        RankInfo(1, 8, 1, "mpich"),
    ),
    "mvapich": (
        {
            "MV2_COMM_WORLD_RANK": "6",
            "MV2_COMM_WORLD_SIZE": "8",
            "MV2_COMM_WORLD_LOCAL_RANK": "2",
        },
        RankInfo(6, 8, 2, "mvapich"),
    ),
    "pals": (
        {"PALS_RANKID": "7", "PALS_LOCAL_RANKID": "3", "PALS_NODEID": "1"},
        RankInfo(7, None, 3, "pals"),
    ),
    "slurm": (
        {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0"},
        RankInfo(0, 4, 0, "slurm"),
    ),
    "lsf": (
        {
            "JSM_NAMESPACE_RANK": "9",
            "JSM_NAMESPACE_SIZE": "12",
            "JSM_NAMESPACE_LOCAL_RANK": "3",
        },
        RankInfo(9, 12, 3, "lsf"),
    ),
}

# An outer launcher's variables leak unchanged into the processes an inner launcher
# starts; the inner one knows the real rank.
SLURM_STEP = {
    "SLURM_PROCID": "0",
    "SLURM_NTASKS": "1",
    "SLURM_LOCALID": "0",
    "SLURM_NNODES": "1",
}
NESTED = {
    "torchrun under sbatch, rank 3": (
        {**SLURM_STEP, "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3"},
        RankInfo(3, 4, 3, "torchrun"),
    ),
    "torchrun under srun, rank 0": (
        {**SLURM_STEP, "RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0"},
        RankInfo(0, 4, 0, "torchrun"),
    ),
    "mpirun under srun, rank 2": (
        {
            **SLURM_STEP,
            "OMPI_COMM_WORLD_RANK": "2",
            "OMPI_COMM_WORLD_SIZE": "4",
            "PMIX_RANK": "2",
        },
        RankInfo(2, 4, None, "openmpi"),
    ),
    "srun with PMI-2 sets both PMI_RANK and SLURM_PROCID": (
        {**SLURM_STEP, "SLURM_PROCID": "1", "SLURM_NTASKS": "2", "PMI_RANK": "1"},
        RankInfo(1, None, None, "mpich"),
    ),
}


def _ranks(infos: list[RankInfo]) -> list[int | None]:
    return [info.rank for info in infos]


@pytest.mark.parametrize("case", sorted(SINGLE_LAUNCHERS))
def test_each_launcher_alone_gives_its_rank(case: str) -> None:
    """Every launcher family's variables alone give its rank, sizes and name."""
    environ, expected = SINGLE_LAUNCHERS[case]

    assert detect_rank(environ=environ) == expected


@pytest.mark.parametrize("case", sorted(NESTED))
def test_inner_launcher_wins_over_outer(case: str) -> None:
    """A launcher nested in SLURM wins over the SLURM_PROCID its children inherit."""
    environ, expected = NESTED[case]

    assert detect_rank(environ=environ) == expected


def test_no_launcher_is_a_plain_main_process() -> None:
    """An empty environment is a single process: rank unknown, and main."""
    info = detect_rank(environ={})

    assert info == RankInfo(None, None, None, None)
    assert info.is_main


def test_explicit_rank_beats_everything() -> None:
    """An explicit rank wins over EXPBOX_RANK and every launcher variable."""
    environ = {"EXPBOX_RANK": "2", "RANK": "3", "WORLD_SIZE": "4", "SLURM_PROCID": "1"}

    info = detect_rank(1, environ=environ)

    assert info == RankInfo(1, 4, None, "explicit")
    assert not info.is_main


def test_explicit_zero_is_main_even_when_launcher_says_otherwise() -> None:
    """rank=0 makes the process main although the launcher says rank 3."""
    assert detect_rank(0, environ={"RANK": "3"}).is_main


def test_expbox_rank_beats_launchers() -> None:
    """EXPBOX_RANK wins over launcher variables and keeps their world size."""
    environ = {"EXPBOX_RANK": "0", "OMPI_COMM_WORLD_RANK": "3"}
    environ["OMPI_COMM_WORLD_SIZE"] = "4"

    assert detect_rank(environ=environ) == RankInfo(0, 4, None, "env:EXPBOX_RANK")


def test_explicit_rank_ignores_malformed_launcher_size() -> None:
    """A malformed size a hand-chosen rank does not need does not stop it."""
    info = detect_rank(0, environ={"RANK": "1", "WORLD_SIZE": "many"})

    assert info == RankInfo(0, None, None, "explicit")


def test_two_nodes_of_two_with_global_rank_have_one_main() -> None:
    """Two nodes of two processes with RANK set: only RANK=0 is main."""
    infos = [
        detect_rank(
            environ={
                "RANK": str(rank),
                "LOCAL_RANK": str(rank % 2),
                "WORLD_SIZE": "4",
                "LOCAL_WORLD_SIZE": "2",
            }
        )
        for rank in range(4)
    ]

    assert _ranks(infos) == [0, 1, 2, 3]
    assert [info.is_main for info in infos] == [True, False, False, False]


def test_two_nodes_of_two_without_global_rank_have_no_main() -> None:
    """Local ranks 0,1,0,1 in a world of 4 with 2 per node never give two mains."""
    environs = [
        {"LOCAL_RANK": str(local), "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}
        for local in (0, 1, 0, 1)
    ]

    with pytest.warns(RuntimeWarning, match="LOCAL_RANK=0 but no global rank"):
        infos = [detect_rank(environ=environ) for environ in environs]

    assert [info.is_main for info in infos] == [False] * 4
    assert _ranks(infos) == [None] * 4
    assert {info.launcher for info in infos} == {"local-rank"}
    assert [info.local_rank for info in infos] == [0, 1, 0, 1]


@pytest.mark.parametrize(
    "environ",
    [
        {"LOCAL_RANK": "0", "WORLD_SIZE": "4"},
        {"LOCAL_RANK": "0", "SLURM_NNODES": "2"},
        {"LOCAL_RANK": "0", "NODE_RANK": "1"},
        {"LOCAL_RANK": "0", "GROUP_RANK": "1", "WORLD_SIZE": "2"},
    ],
    ids=["world-size-without-local-size", "slurm-nnodes", "node-rank", "group-rank"],
)
def test_local_rank_zero_with_sign_of_several_nodes_is_not_main(
    environ: dict[str, str],
) -> None:
    """Local rank 0 is not main when the job may span several nodes."""
    with pytest.warns(RuntimeWarning, match="pass rank= to init"):
        info = detect_rank(environ=environ)

    assert not info.is_main
    assert info.rank is None


def test_local_rank_on_one_node_is_the_global_rank() -> None:
    """On a single node a lone local rank is the global rank, and 0 is main."""
    one_node = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        infos = [
            detect_rank(environ={**one_node, "LOCAL_RANK": str(local)})
            for local in (0, 1)
        ]

    assert infos == [
        RankInfo(0, 2, 0, "local-rank"),
        RankInfo(1, 2, 1, "local-rank"),
    ]
    assert [info.is_main for info in infos] == [True, False]


def test_nonzero_local_rank_of_several_nodes_does_not_warn() -> None:
    """Only a local rank 0 warns; the others are silently not main."""
    environ = {"LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = detect_rank(environ=environ)

    assert not info.is_main


@pytest.mark.parametrize(
    ("environ", "name", "value"),
    [
        ({"RANK": "one"}, "RANK", "one"),
        ({"RANK": ""}, "RANK", ""),
        ({"RANK": "-1"}, "RANK", "-1"),
        ({"EXPBOX_RANK": "0x1"}, "EXPBOX_RANK", "0x1"),
        ({"SLURM_PROCID": "1.0"}, "SLURM_PROCID", "1.0"),
        ({"PMI_RANK": "1_0"}, "PMI_RANK", "1_0"),
        ({"PALS_RANKID": "\u0661"}, "PALS_RANKID", "\u0661"),
        (
            {"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "four"},
            "OMPI_COMM_WORLD_SIZE",
            "four",
        ),
        ({"LOCAL_RANK": "first"}, "LOCAL_RANK", "first"),
    ],
)
def test_malformed_value_names_the_variable(
    environ: dict[str, str], name: str, value: str
) -> None:
    """A set variable that is not a non-negative integer is a ValueError naming it."""
    with pytest.raises(ValueError, match=re.escape(f"{name}={value!r}")):
        detect_rank(environ=environ)


@pytest.mark.parametrize("bad", [True, 1.0, "0"])
def test_explicit_rank_must_be_an_int(bad: object) -> None:
    """An explicit rank that is not an int is a TypeError."""
    with pytest.raises(TypeError, match="rank must be an int"):
        detect_rank(bad, environ={})  # type: ignore[arg-type]


def test_explicit_rank_must_not_be_negative() -> None:
    """A negative explicit rank is a ValueError showing the value."""
    with pytest.raises(ValueError, match="rank must be >= 0, got -2"):
        detect_rank(-2, environ={})


def test_environment_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process environment is read when called, not when the module loads."""
    _clear_rank_variables(monkeypatch)
    monkeypatch.setenv("EXPBOX_RANK", "5")

    first = detect_rank()
    monkeypatch.setenv("EXPBOX_RANK", "0")
    second = detect_rank()

    assert (first.rank, second.rank) == (5, 0)


def _run_child(code: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_detection_never_imports_torch() -> None:
    """Detecting a rank with no launcher does not import torch."""
    out = _run_child(
        """
        import sys
        from expbox.rank import detect_rank
        info = detect_rank()
        print(info.rank, info.launcher, "torch" in sys.modules)
        """
    )

    assert out == "None None False"


@pytest.mark.timeout(180)
def test_initialized_torch_distributed_gives_the_rank() -> None:
    """An initialized single-process gloo group is found when no variable is set."""
    pytest.importorskip("torch.distributed")

    out = _run_child(
        """
        import torch.distributed as dist
        from expbox.rank import detect_rank
        store = dist.HashStore()
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        print(detect_rank(environ={}))
        dist.destroy_process_group()
        print(detect_rank(environ={}))
        """
    )

    assert out.splitlines() == [
        "RankInfo(rank=0, world_size=1, local_rank=None, launcher='torch.distributed')",
        "RankInfo(rank=None, world_size=None, local_rank=None, launcher=None)",
    ]


def test_launcher_variable_beats_torch_distributed() -> None:
    """A launcher variable wins over an initialized torch.distributed."""
    pytest.importorskip("torch.distributed")

    out = _run_child(
        """
        import torch.distributed as dist
        from expbox.rank import detect_rank
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        print(detect_rank(environ={"RANK": "3"}).launcher)
        dist.destroy_process_group()
        """
    )

    assert out == "torchrun"


# -- what init does with the detected rank ------------------------------------------


def _init_in_child(tmp_path: Path, environ: dict[str, str]) -> dict[str, object]:
    """Run xb.init in a child with only ``environ`` set; report what it saw and made."""
    code = f"""
        import json, threading, warnings
        warnings.simplefilter("ignore")
        import expbox as xb
        before = threading.active_count()
        ctx = xb.init(project="p", results_root={str(tmp_path)!r}, logger="file")
        ctx.logger.log_metrics({{"x": 1.0}}, step=0)
        xb.save(ctx)
        print(json.dumps({{
            "rank": ctx.rank,
            "is_main": ctx.is_main,
            "exp_id": ctx.exp_id,
            "new_threads": threading.active_count() - before,
        }}))
    """
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), **environ}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_init_on_rank_one_makes_nothing(tmp_path: Path) -> None:
    """xb.init on rank 1 creates no directory, starts no thread, keeps the shared id."""
    seen = _init_in_child(tmp_path, {"RANK": "1", "EXPBOX_EXP_ID": "shared"})

    assert seen == {"rank": 1, "is_main": False, "exp_id": "shared", "new_threads": 0}
    assert list(tmp_path.iterdir()) == []


def test_init_on_rank_zero_makes_one_box(tmp_path: Path) -> None:
    """xb.init on rank 0 of the same job makes the shared box and its writer."""
    seen = _init_in_child(tmp_path, {"RANK": "0", "EXPBOX_EXP_ID": "shared"})

    assert seen["is_main"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["shared"]


def test_local_rank_warning_points_at_the_init_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warning about a missing global rank names the line that called init."""
    import expbox as xb

    for name, value in {"LOCAL_RANK": "0", "WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    _clear_rank_variables(monkeypatch)

    with pytest.warns(RuntimeWarning, match="no global rank") as caught:
        xb.init(project="p", results_root=tmp_path, logger="file")

    assert caught[0].filename == __file__
    assert list(tmp_path.iterdir()) == []


def test_init_with_only_a_local_rank_on_several_nodes_is_not_main(
    tmp_path: Path,
) -> None:
    """A local rank 0 of a two-node job without a global rank writes no box."""
    environ = {"LOCAL_RANK": "0", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}

    seen = _init_in_child(tmp_path, environ)

    assert list(tmp_path.iterdir()) == []
    assert seen["new_threads"] == 0
    assert seen["is_main"] is False
