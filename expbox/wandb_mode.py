"""Choose the W&B mode and run id for a box, without reading any key's value.

These decisions are made before ``wandb.init`` and need nothing from ``wandb``
itself, so they live apart from the logger and can be tested on plain mappings:
whether credentials exist (only where they are, never what they are), whether a
login prompt could be answered, the timeouts W&B gets unless the caller set its
own, and the command line W&B is shown (the masked one ``meta.json`` records).
"""

from __future__ import annotations

import logging
import netrc
import os
import re
import secrets
import string
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

from .sysinfo import scrub_argv

_log = logging.getLogger("expbox")

DEFAULT_BASE_URL = "https://api.wandb.ai"
#: Seconds ``wandb.init`` may take before it gives up, unless the caller says.
DEFAULT_INIT_TIMEOUT = 60.0
#: Seconds ``run.finish()`` may upload before the rest is left for ``wandb sync``.
DEFAULT_FINISH_TIMEOUT = 60.0

_UNSAFE_RUN_ID = re.compile(r"[^A-Za-z0-9_-]")
_RUN_ID_PREFIX_LENGTH = 48
_TAG_ALPHABET = string.ascii_lowercase + string.digits


def make_run_id(exp_id: str, tag: Optional[str] = None) -> str:
    """Return a new W&B run id for the box ``exp_id``.

    W&B ids are safest with letters, digits, ``_`` and ``-``; every other character
    becomes ``-``. A short random tag follows, because two machines that log to one
    W&B project can make boxes with the same id in the same minute, and W&B would
    otherwise merge them into one run. The id is stored in ``meta.extra`` so a
    resumed box finds its run again.
    """
    if tag is None:
        tag = "".join(secrets.choice(_TAG_ALPHABET) for _ in range(6))
    safe = _UNSAFE_RUN_ID.sub("-", exp_id)[:_RUN_ID_PREFIX_LENGTH]
    return f"{safe}-{tag}"


def find_credentials(
    environ: Optional[Mapping[str, str]] = None, base_url: Optional[str] = None
) -> Optional[str]:
    """Name where W&B would find credentials for ``base_url``, or return None.

    Looks at ``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE`` and the netrc file
    (``$NETRC``, else ``~/.netrc`` or ``~/_netrc``) for the host of ``base_url``,
    ``WANDB_BASE_URL``, W&B's settings file or the W&B cloud. Only the presence of
    a key is checked: its value is never returned, logged or stored.
    """
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    if env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "WANDB_IDENTITY_TOKEN_FILE"
    url = base_url or env.get("WANDB_BASE_URL") or _configured_base_url(env)
    host = url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    path = _netrc_path(env)
    if path is None or not host:
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError) as exc:
        _log.debug("netrc file %s not usable: %s", path, type(exc).__name__)
        return None
    return "netrc" if entry is not None and bool(entry[2]) else None


def _configured_base_url(env: Mapping[str, str]) -> str:
    """The server ``wandb login --host`` saved in W&B's settings file, or the cloud."""
    import configparser

    home = env.get("HOME") or os.path.expanduser("~")
    config_dir = env.get("WANDB_CONFIG_DIR") or os.path.join(home, ".config", "wandb")
    parser = configparser.ConfigParser()
    try:
        parser.read(os.path.join(config_dir, "settings"), encoding="utf-8")
        return parser.get("default", "base_url", fallback=DEFAULT_BASE_URL)
    except (OSError, configparser.Error):
        return DEFAULT_BASE_URL


def _netrc_path(env: Mapping[str, str]) -> Optional[Path]:
    if env.get("NETRC"):
        return Path(env["NETRC"]).expanduser()
    home = env.get("HOME") or os.path.expanduser("~")
    for name in (".netrc", "_netrc"):
        candidate = Path(home) / name
        if candidate.is_file():
            return candidate
    return None


def _is_interactive() -> bool:
    """Whether someone can answer a login prompt on this process's terminal."""
    try:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            return False
        # A job put in the background (``python train.py &``) keeps the terminal
        # but would be stopped by the first read from it.
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (AttributeError, ValueError, OSError):  # replaced or closed streams
        return False


def choose_mode(
    options: Mapping[str, Any],
    settings: Mapping[str, Any],
    environ: Optional[Mapping[str, str]] = None,
    interactive: Optional[bool] = None,
) -> tuple[Optional[str], Optional[str]]:
    """Return ``(mode, reason)``: the mode expbox forces, and why, or ``(None, None)``.

    A mode the user chose (``wandb_options["mode"]``, ``settings["mode"]``,
    ``WANDB_MODE``, ``WANDB_DISABLED``) always wins. Otherwise, without credentials
    and without a terminal, W&B could only fail or wait for a login that never comes,
    so the run is made offline: it is kept in the box for ``wandb sync``.
    """
    env = os.environ if environ is None else environ
    if options.get("mode") or settings.get("mode"):
        return None, None
    if env.get("WANDB_MODE") or env.get("WANDB_DISABLED"):
        return None, None
    if settings.get("api_key") or settings.get("identity_token_file"):
        return None, None
    if find_credentials(env, settings.get("base_url")) is not None:
        return None, None
    if interactive is None:
        interactive = _is_interactive()
    if interactive:
        return None, None
    return "offline", "no W&B credentials were found and there is no terminal to log in"


def settings_dict(settings: Any) -> dict[str, Any]:
    """The caller's W&B settings as a dict of the fields they set."""
    if settings is None:
        return {}
    if isinstance(settings, Mapping):
        return dict(settings)
    # A wandb.Settings (pydantic): keep only what the caller set explicitly.
    fields_set = getattr(settings, "model_fields_set", None)
    if fields_set is None:
        raise TypeError(
            f"wandb option 'settings' must be a dict or wandb.Settings, got "
            f"{type(settings).__name__}"
        )
    return {name: getattr(settings, name) for name in fields_set}


def set_default_timeouts(wandb: ModuleType, settings: dict[str, Any]) -> None:
    """Bound ``wandb.init`` and ``run.finish()`` unless the caller already did.

    A timeout set in the settings or through ``WANDB_INIT_TIMEOUT`` /
    ``WANDB_FINISH_TIMEOUT`` wins; a wandb too old to know a setting is left alone.
    """
    known = getattr(wandb.Settings, "model_fields", {})
    for name, seconds in (
        ("init_timeout", DEFAULT_INIT_TIMEOUT),
        ("finish_timeout", DEFAULT_FINISH_TIMEOUT),
    ):
        if name in settings or os.environ.get(f"WANDB_{name.upper()}"):
            continue
        if name in known:
            settings[name] = seconds


class _ArgvMask:
    """Who is inside ``masked_argv``, and the original and masked command lines."""

    lock = threading.Lock()
    depth = 0
    swap: Optional[tuple[list[str], list[str]]] = None


@contextmanager
def masked_argv() -> Iterator[None]:
    """Show W&B the command line with secret values masked, as ``meta.json`` has it.

    ``wandb.init`` records ``sys.argv`` in the run file it keeps in the box (and in
    ``wandb-metadata.json`` once synced). wandb has no setting to replace it, only
    ``x_disable_meta``, which also drops the host, Python and git state; so while
    this block runs, ``sys.argv`` is a masked copy, and the original list is put
    back after. Nothing changes when there is nothing to mask. Safe to enter from
    several threads at once: the first in masks, the last out restores, and a
    ``sys.argv`` the caller replaced meanwhile is left as they set it.
    """
    with _ArgvMask.lock:
        if _ArgvMask.depth == 0:
            argv = getattr(sys, "argv", None)
            if isinstance(argv, list):
                masked = scrub_argv(argv)
                if masked != argv:
                    _ArgvMask.swap = (argv, masked)
                    sys.argv = masked
        _ArgvMask.depth += 1
    try:
        yield
    finally:
        with _ArgvMask.lock:
            _ArgvMask.depth -= 1
            if _ArgvMask.depth == 0 and _ArgvMask.swap is not None:
                original, masked = _ArgvMask.swap
                if sys.argv is masked:
                    sys.argv = original
                _ArgvMask.swap = None
