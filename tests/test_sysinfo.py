"""Tests for the system information recorded in meta.json, and its scrubbing."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from expbox.envvars import RECORDED_ENV_ALLOWLIST
from expbox.sysinfo import (
    collect_git_info,
    collect_system_info,
    is_secret_name,
    scrub_argv,
    scrub_url,
)

SECRETS = {
    "WANDB_API_KEY": "wandb-secret-0123456789",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-abcdef",
    "HF_TOKEN": "hf_secret_token_xyz",
    "MY_SECRET": "my-secret-value-42",
}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--api-key=abc"], ["--api-key=***"]),
        (["--token", "abc"], ["--token", "***"]),
        (["--password", "pw", "--lr", "0.1"], ["--password", "***", "--lr", "0.1"]),
        (["--secret=s"], ["--secret=***"]),
        (["--key", "k"], ["--key", "***"]),
        (["--hf_token", "t"], ["--hf_token", "***"]),
        (["--db-pass=p"], ["--db-pass=***"]),
        (["--AWS-Secret-Access-Key", "a"], ["--AWS-Secret-Access-Key", "***"]),
        (["-api_key", "q"], ["-api_key", "***"]),
        (["--password="], ["--password=***"]),
        (["--token", "--verbose"], ["--token", "--verbose"]),
        (["--token"], ["--token"]),
        (["wandb.api_key=abc"], ["wandb.api_key=***"]),
        (["+db.password=p"], ["+db.password=***"]),
        (["API_TOKEN=abc"], ["API_TOKEN=***"]),
        (
            ["--key-dim", "64", "--max-tokens", "5"],
            ["--key-dim", "64", "--max-tokens", "5"],
        ),
        (["--token-budget=9", "lr=0.1"], ["--token-budget=9", "lr=0.1"]),
        (["-p", "8080", "-k", "3"], ["-p", "8080", "-k", "3"]),
        (["train.py", "data.csv"], ["train.py", "data.csv"]),
        (
            ["--url=https://u:p@h.com/x?access_token=t&a=1"],
            ["--url=https://h.com/x?access_token=***&a=1"],
        ),
        (["https://ghp_tok@github.com/o/r.git"], ["https://github.com/o/r.git"]),
        (["PGPASSWORD=pw", "--dbpassword=pw"], ["PGPASSWORD=***", "--dbpassword=***"]),
        (
            ["--accesstoken", "t", "--authtoken=t"],
            ["--accesstoken", "***", "--authtoken=***"],
        ),
        (
            ["--clientsecret", "s", "--basicauth=u:p"],
            ["--clientsecret", "***", "--basicauth=***"],
        ),
        (["--header", "Authorization: Bearer t"], ["--header", "Authorization: ***"]),
        (["-H", "authorization:Basic dXNlcjpwYXNz"], ["-H", "authorization:***"]),
        (
            ["--header=X-Api-Key: k", "Cookie: s=1"],
            ["--header=X-Api-Key: ***", "Cookie: ***"],
        ),
        (["--auth-header", "Bearer t.u.v"], ["--auth-header", "Bearer ***"]),
        (["--note=Bearer t", "Basic dXNlcjpwYXNz"], ["--note=Bearer ***", "Basic ***"]),
        (["--title", "basic training"], ["--title", "basic training"]),
        (
            ["--header", "Content-Type: text/plain"],
            ["--header", "Content-Type: text/plain"],
        ),
        (["https://x:PA/SS?V#L@host/p"], ["https://host/p"]),
        (
            ["--max-tokens", "5", "--tokenizer", "t5", "--key-dim", "64"],
            ["--max-tokens", "5", "--tokenizer", "t5", "--key-dim", "64"],
        ),
        (
            ["--author", "ana", "--bypass-cache", "1", "--num-keys", "2"],
            ["--author", "ana", "--bypass-cache", "1", "--num-keys", "2"],
        ),
    ],
)
def test_scrub_argv(argv: list[str], expected: list[str]) -> None:
    """Values of secret-named flags and settings, and URL credentials, become ***."""
    assert scrub_argv(argv) == expected


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ('{"api_key": "sk-123", "lr": 0.1}', '{"api_key": "***", "lr": 0.1}'),
        ("password: hunter2, lr: 0.1", "password: ***, lr: 0.1"),
        ("lr: 0.1, password: a,b c, n: 2", "lr: 0.1, password: ***, n: 2"),
        ("--set=db.password=x,lr=1", "--set=db.password=***,lr=1"),
        ("lr=0.1 wandb.api_key=k seed=3", "lr=0.1 wandb.api_key=*** seed=3"),
        (
            '--config={"db": {"password": "p", "host": "h"}, "n": 1}',
            '--config={"db": {"password": "***", "host": "h"}, "n": 1}',
        ),
        ("{'creds': {'user': 'u', 'x': 1}, 'n': 2}", "{'creds': ***, 'n': 2}"),
        ('{"token": "a\\"b", "n": 2}', '{"token": "***", "n": 2}'),
        ("{api_key: sk-1, lr: 0.1}", "{api_key: ***, lr: 0.1}"),
        ("{lr: 0.1, secret: s}", "{lr: 0.1, secret: ***}"),
        (
            'Authorization: Digest username="u", response="r"',
            "Authorization: ***",
        ),
        (
            '{"max_tokens": 5, "tokenizer": "t5", "key_dim": 64, "author": "a"}',
            '{"max_tokens": 5, "tokenizer": "t5", "key_dim": 64, "author": "a"}',
        ),
        ("device: cuda:0, lr: 0.1", "device: cuda:0, lr: 0.1"),
    ],
)
def test_scrub_argv_masks_secret_fields_inside_an_argument(
    arg: str, expected: str
) -> None:
    """Each secret-named field inside a JSON, YAML or key-value argument is masked."""
    assert scrub_argv(["--opts", arg]) == ["--opts", expected]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--github-pat", "ghp_x", "--pat=p"], ["--github-pat", "***", "--pat=***"]),
        (["--creds", "c", "--aws-cred=c"], ["--creds", "***", "--aws-cred=***"]),
        (["--sig", "s", "--signature=s"], ["--sig", "***", "--signature=***"]),
        (
            ["--pattern", "a", "--patience", "3", "--sigma", "1", "--signature-dim=8"],
            ["--pattern", "a", "--patience", "3", "--sigma", "1", "--signature-dim=8"],
        ),
    ],
)
def test_scrub_argv_masks_pat_creds_and_signature(
    argv: list[str], expected: list[str]
) -> None:
    """pat, cred(s), sig and signature as a name's last word are secret names."""
    assert scrub_argv(argv) == expected


def test_scrub_argv_leaves_its_argument_alone() -> None:
    """Scrubbing returns a new list and does not modify sys.argv's copy."""
    argv = ["--token", "abc"]

    scrub_argv(argv)

    assert argv == ["--token", "abc"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:token@host/x.git", "https://host/x.git"),
        ("https://ghp_abc@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://u:p%40ss@host:8443/r", "https://host:8443/r"),
        ("https://u:p@ss@host/r", "https://host/r"),
        ("ssh://git@host/o/r.git", "ssh://host/o/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://h/p?token=abc&page=2", "https://h/p?token=***&page=2"),
        ("https://h/p?X-Api-Key=abc#frag", "https://h/p?X-Api-Key=***#frag"),
        ("https://h/p?sort_key_order=1", "https://h/p?sort_key_order=1"),
        ("https://h/user@mail/x", "https://h/user@mail/x"),
        ("https://h:8080/user@mail/x", "https://h:8080/user@mail/x"),
        ("https://x:PA/SSVAL@host/p", "https://host/p"),
        ("https://u:a/b@c/d@host/p?m=e@f", "https://host/p?m=e@f"),
        ("https://u:a/b?c#d@host:9/p?q=1", "https://host:9/p?q=1"),
        ("https://:pw/x@host", "https://host"),
        ("http://[::1]:80/a@b", "http://[::1]:80/a@b"),
        ("see https://u:p/w@h/x and http://t@h2", "see https://h/x and http://h2"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=A&X-Amz-Credential=AK%2F1"
            "&X-Amz-Date=2&X-Amz-Security-Token=T&X-Amz-Signature=S",
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=A&X-Amz-Credential=***"
            "&X-Amz-Date=2&X-Amz-Security-Token=***&X-Amz-Signature=***",
        ),
        (
            "https://a.blob.core.windows.net/c/b?sv=2022-11-02&se=2030&sp=r&sig=S%3D",
            "https://a.blob.core.windows.net/c/b?sv=2022-11-02&se=2030&sp=r&sig=***",
        ),
        (
            "https://storage.googleapis.com/b/o?X-Goog-Signature=S&Signature=T",
            "https://storage.googleapis.com/b/o?X-Goog-Signature=***&Signature=***",
        ),
        ("not a url", "not a url"),
    ],
)
def test_scrub_url(url: str, expected: str) -> None:
    """Credentials in a URL's user part and secret query values are removed."""
    assert scrub_url(url) == expected


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("api_key", True),
        ("apikey", True),
        ("HF_TOKEN", True),
        ("client-secret-id", True),
        ("db.password", True),
        ("key", True),
        ("key_dim", False),
        ("num_tokens", False),
        ("tokenizer", False),
        ("keyboard", False),
        ("dbpassword", True),
        ("PGPASSWORD", True),
        ("accesstoken", True),
        ("AWSSecretAccessKey", True),
        ("xapikey", True),
        ("basicauth", True),
        ("auth_header", False),
        ("authheader", True),
        ("Authorization", True),
        ("session-cookie", True),
        ("mysql_pwd", True),
        ("max_tokens", False),
        ("token_budget", False),
        ("author", False),
        ("bypass", False),
        ("monkey", False),
        ("github_pat", True),
        ("pat", True),
        ("creds", True),
        ("sig", True),
        ("X-Amz-Signature", True),
        ("pattern", False),
        ("sigma", False),
        ("", False),
    ],
)
def test_is_secret_name(name: str, secret: bool) -> None:
    """Names containing a secret word, or whose last word names a secret, count."""
    assert is_secret_name(name) is secret


def test_system_info_holds_what_a_reader_needs(tmp_path: Path) -> None:
    """Host, pid, scrubbed command, Python, platform and SLURM ids are recorded."""
    environ = {
        "SLURM_JOB_ID": "123",
        "SLURM_ARRAY_JOB_ID": "120",
        "SLURM_ARRAY_TASK_ID": "3",
        "OMP_NUM_THREADS": "4",
    }

    info = collect_system_info(
        argv=["train.py", "--token", "t0ken"], environ=environ, cwd=tmp_path
    )

    assert info["host"] == socket.gethostname()
    assert info["pid"] == os.getpid()
    assert info["command"] == ["train.py", "--token", "***"]
    assert info["python"]["version"] == platform.python_version()
    assert info["python"]["executable"] == sys.executable
    assert info["platform"] == platform.platform()
    assert info["slurm"] == {
        "job_id": "123",
        "array_job_id": "120",
        "array_task_id": "3",
    }
    assert info["env"] == {
        "SLURM_JOB_ID": "123",
        "SLURM_ARRAY_JOB_ID": "120",
        "SLURM_ARRAY_TASK_ID": "3",
        "OMP_NUM_THREADS": "4",
    }
    assert json.loads(json.dumps(info)) == info


def test_slurm_fields_are_null_outside_slurm(tmp_path: Path) -> None:
    """Without SLURM variables the SLURM fields are null and env is empty."""
    info = collect_system_info(argv=[], environ={}, cwd=tmp_path)

    assert info["slurm"] == {
        "job_id": None,
        "array_job_id": None,
        "array_task_id": None,
    }
    assert info["env"] == {}


def test_secrets_in_the_environment_never_appear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secret environment values appear nowhere in the recorded information."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.chdir(tmp_path)

    info = collect_system_info()

    text = json.dumps(info)
    assert not [name for name, value in SECRETS.items() if value in text]
    assert set(info["env"]) <= set(RECORDED_ENV_ALLOWLIST)
    assert info["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_default_command_is_the_scrubbed_sys_argv(tmp_path: Path) -> None:
    """Called with no arguments, a child process records its own argv, scrubbed."""
    code = textwrap.dedent(
        """
        import json
        from expbox.sysinfo import collect_system_info
        print(json.dumps(collect_system_info()))
        """
    )
    env = {**os.environ, **SECRETS}

    done = subprocess.run(
        [sys.executable, "-c", code, "--api-key", "argv-secret", "lr=0.1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["command"] == ["-c", "--api-key", "***", "lr=0.1"]
    assert "argv-secret" not in done.stdout
    assert not [v for v in SECRETS.values() if v in done.stdout]


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real git repository with one commit and a remote holding a token."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text("print('hi')\n")
    (root / "sub").mkdir()
    (root / "sub" / "x.txt").write_text("x\n")
    _git(root, "add", "train.py", "sub/x.txt")
    _git(root, "commit", "-q", "-m", "first")
    _git(root, "remote", "add", "origin", "https://user:ghp_s3cret@example.com/o/r.git")
    return root


def test_git_info_of_a_clean_repository(repo: Path) -> None:
    """Commit, branch, clean state and the remote without credentials are recorded."""
    info = collect_git_info(repo)

    assert info == {
        "commit": _git(repo, "rev-parse", "HEAD"),
        "branch": "main",
        "dirty": False,
        "remote": "https://example.com/o/r.git",
        "subdir": ".",
    }


def test_git_dirty_counts_tracked_changes_only(repo: Path) -> None:
    """An untracked file leaves the repo clean; a changed tracked file dirties it."""
    (repo / "results").mkdir()
    (repo / "results" / "meta.json").write_text("{}")
    clean = collect_git_info(repo)["dirty"]

    (repo / "train.py").write_text("print('changed')\n")
    dirty = collect_git_info(repo)["dirty"]

    assert (clean, dirty) == (False, True)


def test_git_subdir_and_detached_head(repo: Path) -> None:
    """From a sub-directory the relative path is kept; a detached head has no branch."""
    _git(repo, "checkout", "-q", "--detach")

    info = collect_git_info(repo / "sub")

    assert info["subdir"] == "sub"
    assert info["branch"] is None
    assert info["commit"] == _git(repo, "rev-parse", "HEAD")


def test_git_secret_never_reaches_system_info(repo: Path) -> None:
    """The token in the remote URL appears nowhere in the system information."""
    info = collect_system_info(argv=[], environ={}, cwd=repo)

    assert "ghp_s3cret" not in json.dumps(info)
    assert info["git"]["remote"] == "https://example.com/o/r.git"


def test_repository_without_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh repository has no commit and no remote, but is not an error."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    _git(tmp_path, "init", "-q", "-b", "main")

    info = collect_git_info(tmp_path)

    assert info["commit"] is None
    assert info["remote"] is None
    assert info["subdir"] == "."


def test_outside_a_repository_git_fields_are_null(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a repository every git field is null."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))

    info = collect_git_info(tmp_path)

    assert set(info.values()) == {None}


def test_without_git_installed_fields_are_null(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no git on PATH every git field is null and nothing raises."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    info = collect_system_info(argv=[], environ={}, cwd=repo)

    assert set(info["git"].values()) == {None}


def test_secret_arguments_never_reach_meta_json(tmp_path: Path) -> None:
    """Glued secret names, auth headers and URL passwords are masked in meta.json."""
    code = (
        "import expbox as xb; "
        f"ctx = xb.init(project='p', results_root={str(tmp_path)!r}); ctx.close()"
    )
    argv = [
        "PGPASSWORD=PGPASSVAL",
        "--dbpassword=DBPWVAL",
        "--accesstoken=ACCTOKVAL",
        "--header",
        "Authorization: Bearer BEARERVAL",
        "https://x:PA/SSVAL@host/p",
        "--max-tokens",
        "5",
    ]

    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    (meta,) = tmp_path.glob("*/meta.json")
    text = meta.read_text()
    assert "VAL" not in text
    assert json.loads(text)["system"]["command"][-3:] == [
        "https://host/p",
        "--max-tokens",
        "5",
    ]
