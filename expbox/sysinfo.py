"""What a reader needs to reproduce a run, and nothing secret.

``collect_system_info`` records the host, process id, the command line with
secret-looking values masked, Python, the platform, git state (the remote URL
without credentials), the SLURM job and the values of the allow-listed
environment variables only. It does not record the working directory or the
user name: the git entry gives the directory relative to the repository
(``git.subdir``) instead, which stays meaningful when a box is moved.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from expbox.envvars import RECORDED_ENV_ALLOWLIST

MASK = "***"
#: Seconds each git command may take before its field is recorded as null.
GIT_TIMEOUT = 3.0

_log = logging.getLogger("expbox")

# A flag or setting is secret when one of its words is in _SECRET_WORDS, or its
# last word is in _SECRET_LAST_WORDS. "key" and "token" count only as the last
# word so that --key-dim or --token-budget stay readable while --api-key,
# --hf_token and wandb.api_key=... are masked.
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "apikey",
        "credential",
        "credentials",
        "authorization",
        "cookie",
    }
)
_SECRET_LAST_WORDS = frozenset({"key", "token", "pass", "pwd", "auth"})

_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s]*@")
_URL_QUERY_PARAM = re.compile(r"(?P<lead>[?&;](?P<name>[^=&#;\s]+)=)[^&#;\s]*")
_SETTING = re.compile(r"(?P<name>[+~]{0,2}[A-Za-z_][\w.\-/]*)=")


def collect_system_info(
    argv: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Return host, pid, command, Python, platform, git, SLURM and allowed env.

    Args:
        argv: The command to record (default ``sys.argv``), scrubbed of secrets.
        environ: Where SLURM and allow-listed variables are read (default
            ``os.environ``). No other variable's value is ever recorded.
        cwd: Where git is asked about the repository (default: the working
            directory).

    Returns:
        A JSON-ready dict with the keys ``host``, ``pid``, ``command``,
        ``python``, ``platform``, ``git``, ``slurm`` and ``env``. Git fields are
        ``None`` when git is missing, slow, or ``cwd`` is not in a repository.
    """
    environ = os.environ if environ is None else environ
    argv = sys.argv if argv is None else argv
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": scrub_argv(list(argv)),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable or None,
        },
        "platform": platform.platform(),
        "git": collect_git_info(Path.cwd() if cwd is None else Path(cwd)),
        "slurm": {
            "job_id": environ.get("SLURM_JOB_ID"),
            "array_job_id": environ.get("SLURM_ARRAY_JOB_ID"),
            "array_task_id": environ.get("SLURM_ARRAY_TASK_ID"),
        },
        "env": {
            name: environ[name] for name in RECORDED_ENV_ALLOWLIST if name in environ
        },
    }


def collect_git_info(cwd: Path) -> dict[str, Any]:
    """Return commit, branch, dirty flag, remote URL and subdir of the repo at ``cwd``.

    ``dirty`` is true when tracked files differ from the commit; untracked files
    do not count, since a results directory inside the repository would make
    every run dirty. ``branch`` is ``None`` on a detached head. The remote is
    ``origin``'s URL with credentials removed. Every field is ``None`` when it
    cannot be known.
    """
    info: dict[str, Any] = {
        "commit": None,
        "branch": None,
        "dirty": None,
        "remote": None,
        "subdir": None,
    }
    try:
        subdir = _git(cwd, "rev-parse", "--show-prefix")
        if subdir is None:
            return info
        info["subdir"] = subdir.rstrip("/") or "."
        info["commit"] = _git(cwd, "rev-parse", "--verify", "-q", "HEAD")
        info["branch"] = _git(cwd, "symbolic-ref", "--short", "-q", "HEAD")
        remote = _git(cwd, "config", "--get", "remote.origin.url")
        info["remote"] = scrub_url(remote) if remote else None
        status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
        info["dirty"] = None if status is None else bool(status)
    except subprocess.TimeoutExpired:
        # A repository that slow (a hung network mount, a huge work tree) would
        # make every later command time out too; keep what is known.
        _log.debug("git timed out after %s s in %s", GIT_TIMEOUT, cwd)
    return info


def scrub_argv(argv: list[str]) -> list[str]:
    """Return ``argv`` with secret values replaced by ``***``.

    Masked: the value of a long flag named like a secret (``--api-key=abc``,
    ``--token abc``, ``--password``, ``--secret``, ``--key``, ``--hf_token``,
    ``--db-pass``), the value of a ``name=value`` setting named like one
    (``wandb.api_key=abc``, ``API_TOKEN=abc``), and credentials inside URLs
    anywhere (``https://user:pass@host`` and ``?token=...``). Single-dash flags
    with a long name (``-api_key``) count as long flags; one-letter flags such
    as ``-p`` are kept, being too ambiguous to guess.
    """
    scrubbed: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next:
            mask_next = False
            if not arg.startswith("--"):
                scrubbed.append(MASK)
                continue
        dashes = len(arg) - len(arg.lstrip("-"))
        if dashes in (1, 2) and len(arg) > dashes + 1:
            name, eq, _ = arg[dashes:].partition("=")
            if is_secret_name(name):
                if eq:
                    scrubbed.append(f"{arg[:dashes]}{name}={MASK}")
                else:
                    scrubbed.append(arg)
                    mask_next = True
                continue
        else:
            setting = _SETTING.match(arg)
            if setting and is_secret_name(setting.group("name")):
                scrubbed.append(setting.group(0) + MASK)
                continue
        scrubbed.append(scrub_url(arg) if "://" in arg else arg)
    return scrubbed


def scrub_url(url: str) -> str:
    """Return ``url`` without user, password or token.

    ``https://user:token@host/x.git`` becomes ``https://host/x.git``, and query
    parameters named like a secret (``?access_token=...``) get the value
    ``***``. Text that is not a URL comes back unchanged; scp-like remotes
    (``git@host:org/x.git``) carry no secret and are kept.
    """
    url = _URL_USERINFO.sub(lambda m: m.group("scheme"), url)
    if "?" not in url:
        return url
    return _URL_QUERY_PARAM.sub(
        lambda m: m.group("lead") + MASK if is_secret_name(m.group("name")) else m[0],
        url,
    )


def is_secret_name(name: str) -> bool:
    """Tell whether a flag, setting or parameter name looks like it holds a secret."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    if not words:
        return False
    return words[-1] in _SECRET_LAST_WORDS or any(w in _SECRET_WORDS for w in words)


def _git(cwd: Path, *args: str) -> str | None:
    """Run one git command; return its stripped output, or ``None`` on any failure."""
    env = dict(os.environ)
    # Never prompt, never take the index lock (a user's git command running at
    # the same time must not fail because of us), and read messages in English.
    env.update(GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    try:
        done = subprocess.run(
            ["git", "-C", os.fspath(cwd), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        _log.debug("git %s failed: %s", " ".join(args), exc)
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip()
