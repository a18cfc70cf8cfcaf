"""Make experiment ids and claim a box directory atomically.

Creating the directory with ``os.mkdir`` is the claim: exactly one process
succeeds for a given name, on a local disk and on NFS or Lustre alike. A
generated id that is already taken moves on to the next free name, so any
number of processes started together on one results root get distinct boxes.
"""

from __future__ import annotations

import os
import re
import secrets
import string
from datetime import datetime
from pathlib import Path
from typing import Callable

from expbox.errors import BoxExistsError
from expbox.names import MAX_NAME_BYTES, check_name

ID_STYLES = ("datetime", "seq", "random", "custom")
LINK_STYLES = {"kebab": "-", "snake": "_"}
RANDOM_ALPHABET = string.ascii_lowercase + string.digits
RANDOM_LENGTH = 8

#: Upper bound on names tried before giving up; far above any real contention.
MAX_ATTEMPTS = 10_000
#: The longest counter an id is checked for before anything is created, so that
#: a generated id still makes a valid box name after ten thousand of its kind.
COUNTER_ROOM = "-9999"

IdGenerator = Callable[[str, Path], str]


def claim_box(
    results_root: Path,
    *,
    project: str,
    exp_id: str | None = None,
    id_style: str = "datetime",
    prefix: str | None = None,
    suffix: str | None = None,
    link_style: str = "kebab",
    id_generator: IdGenerator | None = None,
    now: datetime | None = None,
) -> tuple[str, Path]:
    """Create the box directory atomically and return ``(exp_id, path)``.

    The id is ``[prefix<link>]core[<link>suffix]``, where ``<link>`` is ``-``
    (``link_style="kebab"``) or ``_`` (``"snake"``) and the core comes from
    ``id_style``:

    - ``"datetime"``: ``YYMMDD-HHMM`` from ``now`` (default: local time now);
      taken ids continue as ``250124-1530-2``, ``-3``, ...
    - ``"seq"``: ``<project slug>-NN`` with at least two digits, one more than
      the highest existing number with the same prefix and suffix; a number
      taken meanwhile moves on to the next.
    - ``"random"``: 8 lowercase letters and digits from ``secrets``; redrawn
      when taken.
    - ``id_generator(project, results_root)``: any safe name; taken names
      continue with ``-2``, ``-3``, ... like the datetime style. It is called
      once, after ``results_root`` exists. Passing a generator selects this
      style whatever ``id_style`` says.

    The counter always joins with ``-`` and sits before the suffix, so
    ``rbc_250124-1530-2_v1`` still ends with ``_v1``. Before anything is
    created, the whole id must be a valid box name (``check_name``) even with
    the room a counter takes (``COUNTER_ROOM``; the ``seq`` number counts as
    four digits), so a long prefix or suffix fails early with a ValueError
    rather than making a box that cannot be loaded. Only the box directory
    itself is created here (``results_root`` with parents); its
    sub-directories are the caller's.

    Args:
        results_root: Directory that holds the boxes; created if missing.
        project: Project name, used by the ``seq`` style and the generator.
        exp_id: An explicit, complete id. It is used as given: combining it
            with ``prefix`` or ``suffix`` is refused, since a resumed run
            would otherwise decorate its own id twice.
        id_style: One of ``ID_STYLES``.
        prefix: Text joined before the core.
        suffix: Text joined after the core.
        link_style: ``"kebab"`` or ``"snake"``.
        id_generator: Makes the core id, called once per claim.
        now: The time for the ``datetime`` style, used as given (naive or aware).

    Returns:
        The id and the path of the box directory.

    Raises:
        ValueError: An unknown style, an unsafe id, prefix or suffix, an id
            too long for a file name once joined, or ``exp_id`` combined with
            ``prefix``/``suffix``.
        BoxExistsError: ``exp_id`` exists, or no free name was found within
            ``MAX_ATTEMPTS`` tries.
    """
    link = _check_styles(id_style, link_style, id_generator)
    head = "" if prefix is None else check_name(prefix, "prefix") + link
    tail = "" if suffix is None else link + check_name(suffix, "suffix")
    root = Path(results_root)

    if exp_id is not None:
        if prefix is not None or suffix is not None:
            raise ValueError(
                f"exp_id={exp_id!r} is a complete id; pass prefix and suffix only "
                "when the id is generated, or write them into exp_id"
            )
        check_name(exp_id, "exp_id")
        root.mkdir(parents=True, exist_ok=True)
        return exp_id, _claim_explicit(root / exp_id)

    given = [n for n, v in (("prefix", prefix), ("suffix", suffix)) if v is not None]
    if id_generator is not None:
        # The shortest possible core first, so a prefix or suffix too long for
        # any id fails before the results root is created.
        _check_id(head + "x", COUNTER_ROOM, tail, given)
        # The generator may look at the boxes already there, so the root
        # exists before it is called.
        root.mkdir(parents=True, exist_ok=True)
        core = check_name(id_generator(project, root), "id_generator result")
        _check_id(head + core, COUNTER_ROOM, tail, [*given, "the id_generator result"])
        return _claim_counted(root, head + core, tail)
    if id_style == "datetime":
        core = (now if now is not None else datetime.now()).strftime("%y%m%d-%H%M")
        _check_id(head + core, COUNTER_ROOM, tail, given)
        root.mkdir(parents=True, exist_ok=True)
        return _claim_counted(root, head + core, tail)
    if id_style == "seq":
        stem = f"{head}{slugify_project(project)}-"
        _check_id(stem, "9999", tail, [*given, "the project name"])
        root.mkdir(parents=True, exist_ok=True)
        return _claim_seq(root, stem, tail)
    # A random id is redrawn when taken, never counted.
    _check_id(head + "x" * RANDOM_LENGTH, "", tail, given)
    root.mkdir(parents=True, exist_ok=True)
    return _claim_random(root, head, tail)


def slugify_project(project: str) -> str:
    """Return ``project`` lowercased and safe as part of a path component.

    Runs of anything but letters, digits, ``_``, ``.`` and ``-`` become one
    ``-``; leading and trailing ``-``, ``_`` and ``.`` are dropped. Letters
    outside ASCII are kept (lowercased).

    Raises:
        ValueError: Nothing usable is left, e.g. for ``"  "`` or ``"!!"``.
    """
    if not isinstance(project, str):
        raise TypeError(f"project must be a string, got {type(project).__name__}")
    slug = re.sub(r"[^\w.-]+", "-", project.lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-_.")
    if not slug:
        raise ValueError(
            f"project={project!r} has no letters or digits to name a box with; "
            "choose a project name with at least one"
        )
    return slug


def _check_styles(
    id_style: str, link_style: str, id_generator: IdGenerator | None
) -> str:
    if id_style not in ID_STYLES:
        raise ValueError(
            f"id_style={id_style!r} is not one of {', '.join(map(repr, ID_STYLES))}"
        )
    if id_style == "custom" and id_generator is None:
        raise ValueError("id_style='custom' needs an id_generator(project, root)")
    if id_generator is not None and not callable(id_generator):
        raise TypeError(
            f"id_generator must be callable, got {type(id_generator).__name__}"
        )
    if link_style not in LINK_STYLES:
        raise ValueError(
            f"link_style={link_style!r} is not one of "
            f"{', '.join(map(repr, LINK_STYLES))}"
        )
    return LINK_STYLES[link_style]


def _check_id(stem: str, room: str, tail: str, parts: list[str]) -> None:
    """Refuse an id that is no valid box name once ``room`` is made for a counter."""
    longest = stem + room + tail
    size = len(longest.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        with_room = f" with room for a counter ({room!r})" if room else ""
        shorten = ", ".join(parts[:-1]) + " or " + parts[-1] if parts[1:] else parts[0]
        raise ValueError(
            f"the exp_id would be {size} bytes in UTF-8{with_room}, and at most "
            f"{MAX_NAME_BYTES} fit a box name; shorten {shorten}"
        )
    check_name(longest, "exp_id")


def _claim_explicit(box: Path) -> Path:
    try:
        os.mkdir(box)
    except FileExistsError:
        if box.is_dir():
            raise BoxExistsError(
                f"box {box} already exists; resume it explicitly or choose "
                "another exp_id"
            ) from None
        raise BoxExistsError(
            f"{box} exists and is not a directory; choose another exp_id"
        ) from None
    return box


def _try_claim(box: Path) -> bool:
    try:
        os.mkdir(box)
    except FileExistsError:
        return False
    return True


def _claim_counted(root: Path, stem: str, tail: str) -> tuple[str, Path]:
    """Claim ``stem+tail``, else ``stem-N+tail`` for the next free N >= 2."""
    if _try_claim(root / (stem + tail)):
        return stem + tail, root / (stem + tail)
    # Start past the highest counter already on disk so that a crowded minute
    # costs one directory scan rather than one mkdir per earlier box.
    start = max(2, _highest_number(root, stem + "-", tail) + 1)
    return _claim_numbered(root, stem + "-", tail, start, width=1)


def _claim_seq(root: Path, stem: str, tail: str) -> tuple[str, Path]:
    start = _highest_number(root, stem, tail) + 1
    return _claim_numbered(root, stem, tail, max(start, 1), width=2)


def _claim_numbered(
    root: Path, stem: str, tail: str, start: int, width: int
) -> tuple[str, Path]:
    # Each failed mkdir means another process took that number, so trying the
    # next one keeps the claimed numbers consecutive under contention.
    for number in range(start, start + MAX_ATTEMPTS):
        name = f"{stem}{number:0{width}d}{tail}"
        # Past the counter room checked up front, a longer number could make
        # a name too long; refuse it as a ValueError, not an OSError.
        check_name(name, "exp_id")
        if _try_claim(root / name):
            return name, root / name
    raise BoxExistsError(
        f"no free box name from {stem}{start:0{width}d}{tail} after {MAX_ATTEMPTS} "
        f"tries in {root}; choose another id style or results root"
    )


def _claim_random(root: Path, head: str, tail: str) -> tuple[str, Path]:
    for _ in range(100):
        core = "".join(secrets.choice(RANDOM_ALPHABET) for _ in range(RANDOM_LENGTH))
        name = head + core + tail
        if _try_claim(root / name):
            return name, root / name
    raise BoxExistsError(
        f"no free random box name after 100 draws in {root}; the results root "
        "is unusually crowded, choose another id style"
    )


def _highest_number(root: Path, stem: str, tail: str) -> int:
    """Return the highest ``N`` among names ``stem + N + tail`` in ``root``, or 0."""
    pattern = re.compile(re.escape(stem) + r"([0-9]+)" + re.escape(tail))
    highest = 0
    with os.scandir(root) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match:
                highest = max(highest, int(match.group(1)))
    return highest
