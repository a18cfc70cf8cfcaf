"""What a reader needs to reproduce a run, and nothing secret.

``collect_system_info`` records the host, process id, the command line with
secret-looking values masked, Python, the platform, git state (the remote URL
without credentials), the SLURM job and the values of the allow-listed
environment variables only. It does not record the working directory or the
user name as such: the git entry gives the directory relative to the repository
(``git.subdir``) instead, which stays meaningful when a box is moved. The Python
executable and the script in ``argv[0]`` are recorded as given, and an absolute
path there often shows a home directory.
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

# A name (flag, setting, query parameter, header, field) is split into words at
# every character that is not a letter or digit. It is secret when a word
# contains one of _SECRET_STEMS, so glued names such as dbpassword, PGPASSWORD,
# clientsecret or xapikey count; or when its last word, the one that says what
# the value is, is one of _SECRET_LAST_WORDS (github-pat, aws_creds,
# X-Amz-Signature, sig), ends with one of _SECRET_ENDINGS (accesstoken,
# basicauth, dbpwd) or starts with "auth" but not "author" (authtoken,
# authheader). That keeps --max-tokens, --tokenizer, --key-dim, --token-budget,
# --author, --bypass, --pattern and --sigma readable.
_SECRET_STEMS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "credential",
    "apikey",
    "accesskey",
    "privatekey",
    "authorization",
)
_SECRET_LAST_WORDS = frozenset(
    {"key", "pass", "pat", "cred", "creds", "sig", "signature"}
)
_SECRET_ENDINGS = ("token", "auth", "pwd", "cookie")

# scheme:// where a URL starts, anywhere in an argument.
_URL_START = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://")
_URL_QUERY_PARAM = re.compile(r"(?P<lead>[?&;](?P<name>[^=&#;\s]+)=)[^&#;\s]*")
_SETTING = re.compile(r"(?P<name>[+~]{0,2}[A-Za-z_][\w.\-/]*)=")
# A field "name: value" or "name=value" inside one argument: a JSON or YAML
# mapping, a "key: value, ..." list, an HTTP header, the value of --set=a.b=c.
# The name, maybe quoted, starts the text or follows a space or one of {[(,;=
_FIELD = re.compile(
    r"(?<![^\s{\[(,;=])(?P<q>[\"']?)(?P<name>[+~]{0,2}[A-Za-z_][\w.\-/]*)(?P=q)"
    r"\s*(?P<sep>[:=])\s*"
)
_FIELD_START = r"[\"']?[+~]{0,2}[A-Za-z_][\w.\-/]*[\"']?\s*"
# Where an unquoted field value ends: before the next field with the same
# separator, or before a closing bracket. A value holding commas or spaces is
# then masked whole ("password: a, b" or "Authorization: Digest u=1, r=2").
_BARE_END = {
    sep: re.compile(rf"(?:[,;]|\s)\s*(?={_FIELD_START}{sep})|[}}\]]\s*(?:[,;}}\]]|$)")
    for sep in ":="
}
# "Bearer <token>" anywhere; "Basic <base64>" only as a whole value, and only
# when the credential is not a plain lowercase word ("basic training").
_BEARER = re.compile(r"(?P<lead>\bbearer\s+)[^\s\"',;]+", re.I)
_BASIC = re.compile(
    r"(?P<lead>(?:^|=)\s*basic\s+)(?P<cred>[A-Za-z0-9+/]{8,}={0,2})\s*$", re.I
)


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
    ``--token abc``, ``--github-pat``, ``--creds``), the value of a
    ``name=value`` setting named like one (``wandb.api_key=abc``), the value of
    each secret-named field inside an argument, the rest kept (``{"api_key":
    "***", "lr": 0.1}``, ``password: ***, lr: 0.1``, ``--set=db.password=***``,
    ``Authorization: ***``), and credentials inside URLs anywhere (the user part
    and secret query values such as ``X-Amz-Signature`` or ``sig``).
    ``Bearer <token>`` anywhere and a whole value ``Basic <base64>`` keep only
    the scheme. Single-dash flags with a long name (``-api_key``) count as long
    flags; one-letter flags such as ``-p`` are kept, being too ambiguous to
    guess. See ``is_secret_name`` for which names count as secret.
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
        scrubbed.append(_scrub_text(arg))
    return scrubbed


def _scrub_text(text: str) -> str:
    """Mask secret fields, an Authorization scheme and URL credentials in text."""
    text = _scrub_fields(text)
    text = _BEARER.sub(lambda m: m.group("lead") + MASK, text)
    basic = _BASIC.search(text)
    if basic and not basic.group("cred").islower():
        text = text[: basic.end("lead")] + MASK
    return scrub_url(text) if "://" in text else text


def _scrub_fields(text: str) -> str:
    """Mask the value of every secret-named field in ``text``, keep the rest."""
    parts: list[str] = []
    done = pos = 0
    while True:
        field = _FIELD.search(text, pos)
        if field is None:
            break
        start = pos = field.end()
        if not is_secret_name(field.group("name")):
            # Scan the value too: a nested mapping holds its own fields.
            continue
        end = _value_end(text, start, field.group("sep"))
        quote = text[start] if start < end and text[start] in "\"'" else ""
        parts.append(text[done:start] + quote + MASK + quote)
        done = pos = end
    parts.append(text[done:])
    return "".join(parts)


def _value_end(text: str, start: int, sep: str) -> int:
    """Return where the field value starting at ``start`` ends.

    A quoted value ends at its closing quote, a bracketed one at its matching
    bracket (both at the end of the text when unclosed), a bare one as
    ``_BARE_END`` says.
    """
    opener = text[start : start + 1]
    if opener and opener in "\"'{[":
        depth = 0
        quote = ""
        i = start
        while i < len(text):
            char = text[i]
            if quote:
                if char == "\\":
                    i += 1
                elif char == quote:
                    quote = ""
                    if depth == 0:
                        return i + 1
            elif char in "\"'":
                quote = char
            elif char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return len(text)
    end = _BARE_END[sep].search(text, start)
    return end.start() if end else len(text)


def scrub_url(url: str) -> str:
    """Return ``url`` without user, password or token.

    ``https://user:token@host/x.git`` becomes ``https://host/x.git``, and query
    parameters named like a secret (``?access_token=...``) get the value
    ``***``. Text that is not a URL comes back unchanged; scp-like remotes
    (``git@host:org/x.git``) carry no secret and are kept.

    The user part ends at the last ``@`` before the first ``/``, ``?`` or
    ``#``, so a password may hold ``@``. A password may also hold ``/``, ``?``
    or ``#`` when the user part has the form ``user:password``: if what
    follows ``scheme://`` up to the first ``/`` has a colon not followed by a
    port number, everything up to the last ``@`` before the query (``?`` or
    ``#`` after the first ``@``) is removed, an ``@`` in the path included.
    Otherwise (``https://host/user@mail``) the ``@`` is in the path and kept.
    """
    url = _strip_userinfo(url)
    if "?" not in url:
        return url
    return _URL_QUERY_PARAM.sub(
        lambda m: m.group("lead") + MASK if is_secret_name(m.group("name")) else m[0],
        url,
    )


def is_secret_name(name: str) -> bool:
    """Tell whether a flag, setting, parameter or header name looks secret.

    See the rule above ``_SECRET_STEMS``: ``db_password``, ``dbpassword``,
    ``accesstoken``, ``api-key``, ``github_pat``, ``X-Amz-Signature`` and
    ``Authorization`` are secret; ``max_tokens``, ``tokenizer``, ``key_dim``
    and ``pattern`` are not.
    """
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    if not words:
        return False
    if any(stem in w for w in words for stem in _SECRET_STEMS):
        return True
    last = words[-1]
    return (
        last in _SECRET_LAST_WORDS
        or last.endswith(_SECRET_ENDINGS)
        or (last.startswith("auth") and not last.startswith("author"))
    )


def _strip_userinfo(text: str) -> str:
    """Remove ``user:password@`` after every ``scheme://`` in ``text``."""
    parts: list[str] = []
    done = 0
    for match in _URL_START.finditer(text):
        start = match.end()
        if start < done:
            continue
        parts.append(text[done:start])
        done = start + _userinfo_length(text, start)
    parts.append(text[done:])
    return "".join(parts)


def _userinfo_length(text: str, start: int) -> int:
    """Return how many characters from ``start`` are ``userinfo@`` (0 if none)."""
    space = re.search(r"\s", text[start:])
    rest = text[start : start + space.start()] if space else text[start:]
    cut = re.search(r"[/?#]", rest)
    authority = rest[: cut.start()] if cut else rest
    if "@" in authority:
        return authority.rindex("@") + 1
    at = rest.find("@", len(authority))
    if at < 0 or authority.startswith("["):
        return 0
    _, colon, port = authority.partition(":")
    if not colon or port.isdigit() or not port:
        return 0
    # user:pa/ss@host/path: which @ ends the password cannot be told from one
    # in the path, so take the last one before the query; cutting too much of
    # the path is better than keeping part of a password.
    query = re.search(r"[?#]", rest[at:])
    end = at + query.start() if query else len(rest)
    return rest.rindex("@", 0, end) + 1


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
