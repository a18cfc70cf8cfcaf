"""The ``expbox`` command: list boxes, show one, export its metrics, plot them.

Exit status: 0 on success; 1 for an error the user can fix or a malformed
command line, either way one line on stderr (``expbox: error: ...``); 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson

from . import boxes as _boxes
from .display import (
    DURATION_HELP,
    TEXT_HELP,
    clip,
    flatten,
    format_created,
    format_duration,
    format_size,
    format_value,
    json_text,
    markdown_note,
    print_table,
    safe,
)
from .envvars import RESULTS_ROOT
from .errors import ExpboxError, MissingDependencyError
from .paths import METRICS_FILE
from .reader import read_records
from .tail import MetricsTail, read_tail

_DEFAULT_LS_KEYS = 3
_TITLE_WIDTH = 32


class _UserError(Exception):
    """A failure explained by its message alone, reported without a traceback."""


def _results_root(args: argparse.Namespace) -> Path:
    given = getattr(args, "results_root", None)
    return Path(given or os.environ.get(RESULTS_ROOT) or "results")


def _split_keys(text: str | None, option: str = "--keys") -> list[str] | None:
    if text is None:
        return None
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise _UserError(f"{option} needs at least one name, e.g. {option} a,b")
    return keys


def _emit_warnings(caught: Iterable[warnings.WarningMessage]) -> None:
    for message in dict.fromkeys(str(w.message) for w in caught):
        message = (
            message[len("expbox: ") :] if message.startswith("expbox: ") else message
        )
        print(f"expbox: note: {safe(message)}", file=sys.stderr)


# -- ls ----------------------------------------------------------------------------


def _cmd_ls(args: argparse.Namespace) -> int:
    keys = _split_keys(args.keys)
    statuses = _split_keys(args.status, "--status")
    for status in statuses or ():
        if status not in _boxes.SHOWN_STATUSES:
            choices = ", ".join(_boxes.SHOWN_STATUSES)
            raise _UserError(f"--status {status!r} is not one of {choices}")
    found = _boxes.list_boxes(
        _results_root(args), project=args.project, status=statuses
    )
    if args.limit is not None:
        if args.limit < 0:
            raise _UserError(f"--limit must be 0 or more, got {args.limit}")
        found = found[: args.limit]

    listing = []
    for box in found:
        # A plain string path: building Path objects is a visible share of the
        # cost when listing thousands of boxes.
        metrics = os.path.join(box.path, "logs", METRICS_FILE)
        try:
            if keys is None:
                tail = read_tail(metrics, max_bytes=0)
                tail.values = dict(list(tail.values.items())[:_DEFAULT_LS_KEYS])
            else:
                tail = read_tail(metrics, keys)
            unreadable = None
        except OSError as exc:
            # One box's broken metrics file must not hide every other box.
            tail, unreadable = MetricsTail(), exc.strerror or str(exc)
            print(
                f"expbox: note: box {safe(box.exp_id)}: cannot read "
                f"logs/{METRICS_FILE} ({safe(unreadable)})",
                file=sys.stderr,
            )
        listing.append((box, tail, unreadable))

    if args.json:
        entries = [_ls_entry(box, tail, bad) for box, tail, bad in listing]
        print(json.dumps(entries, indent=2))
        return 0
    if not listing:
        root = safe(_results_root(args))
        print(f"expbox: no boxes under {root}", file=sys.stderr)
        return 0
    header = ["ID", "PROJECT", "TITLE", "STATUS", "CREATED", "DURATION", "STEP"]
    header += [safe(key) for key in keys] if keys is not None else ["METRICS"]
    rows = []
    for box, tail, unreadable in listing:
        row = [
            safe(box.exp_id),
            clip(box.get("project"), 20),
            clip(box.get("title"), _TITLE_WIDTH),
            clip(box.status, 20),
            format_created(box),
            format_duration(box.duration),
            "unreadable" if unreadable else format_value(tail.last_step),
        ]
        if keys is not None:
            row += [format_value(tail.values.get(key)) for key in keys]
        else:
            row.append(
                " ".join(f"{safe(k)}={format_value(v)}" for k, v in tail.values.items())
            )
        rows.append(row)
    print_table(header, rows)
    return 0


def _ls_entry(
    box: _boxes.BoxInfo, tail: MetricsTail, unreadable: str | None
) -> dict[str, Any]:
    duration = box.duration
    return {
        "id": box.exp_id,
        "project": box.get("project"),
        "title": box.get("title"),
        "status": box.status,
        "recorded_status": box.get("status"),
        "problem": box.problem,
        "created": box.get("created_at"),
        "finished": box.get("finished_at"),
        "duration_s": None if duration is None else round(duration, 3),
        "last_step": tail.last_step,
        "last_values": {k: _boxes.json_value(v) for k, v in tail.values.items()},
        "metrics_problem": unreadable,
        "path": str(box.path),
    }


# -- show ----------------------------------------------------------------------------


def _cmd_show(args: argparse.Namespace) -> int:
    box = _boxes.find_box(_results_root(args), args.exp_id)
    status = box.status + (f" ({box.problem})" if box.problem else "")
    print(f"box: {safe(box.exp_id)}\npath: {safe(box.path.resolve())}")
    print(f"status: {safe(status)}\nduration: {format_duration(box.duration)}")
    for key, value in flatten(box.meta) if box.meta else ():
        if key not in ("exp_id", "status"):
            shown = value if isinstance(value, str) else json.dumps(value)
            print(f"{safe(key)}: {safe(shown)}")

    config = box.paths.config_snapshot
    if config.is_file():
        print(f"\nconfig ({config.relative_to(box.path).as_posix()}):")
        for line in config.read_text(encoding="utf-8", errors="replace").splitlines():
            print(f"  {safe(line)}")

    print("\nfiles:")
    files = sorted(p for p in box.path.rglob("*") if p.is_file())
    for path in files:
        rel = path.relative_to(box.path).as_posix()
        print(f"  {safe(rel)}  {format_size(path.stat().st_size)}")

    tail = _read_tail_of(box, max_bytes=1024 * 1024)
    if tail.exists:
        print(f"\nlast values (step {format_value(tail.last_step)}):")
        for key, value in tail.values.items():
            print(f"  {safe(key)}: {format_value(value)}")
        if tail.torn:
            print(
                "expbox: note: the last line of metrics.jsonl is torn", file=sys.stderr
            )
    if box.meta is None:
        raise _UserError(f"box {box.exp_id!r}: {box.problem}; the file is corrupt")
    return 0


def _read_tail_of(box: _boxes.BoxInfo, **options: Any) -> MetricsTail:
    """``read_tail`` of the box's metrics file, failing with one line naming the box."""
    try:
        return read_tail(box.paths.metrics, **options)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise _UserError(
            f"box {box.exp_id!r}: cannot read logs/{METRICS_FILE} ({reason})"
        ) from exc


# -- metrics -------------------------------------------------------------------------


def _records(box: _boxes.BoxInfo, keys: list[str] | None) -> Iterator[dict[str, Any]]:
    """Stream the records of ``box``, restricted to ``keys`` (plus step and time)."""
    path = box.paths.metrics
    if not path.exists():
        raise _UserError(f"box {box.exp_id!r} has no metrics file ({path})")
    if not path.is_file():
        reason = "Is a directory" if path.is_dir() else "not a regular file"
        raise _UserError(
            f"box {box.exp_id!r}: cannot read logs/{METRICS_FILE} ({reason})"
        )
    return read_records(path, keys=keys)


def _cmd_metrics(args: argparse.Namespace) -> int:
    box = _boxes.find_box(_results_root(args), args.exp_id)
    keys = _split_keys(args.keys)
    out = sys.stdout
    seen: set[str] = set()

    def records() -> Iterator[dict[str, Any]]:
        # A key missing from every record is known only at the end; records
        # hold only the wanted keys, so noting them on the way costs little.
        for record in _records(box, keys):
            if keys is not None:
                seen.update(record)
            yield record

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.format == "jsonl":
            for record in records():
                safe = {k: _boxes.json_value(v) for k, v in record.items()}
                out.write(orjson.dumps(safe).decode() + "\n")
        else:
            # The header is the union of keys in first-seen order, so without
            # --keys the file is read twice rather than held in memory.
            if keys is None:
                columns = list(dict.fromkeys(k for r in _records(box, None) for k in r))
            else:
                columns = ["step", "time", *keys]
            writer = csv.DictWriter(
                out, columns, extrasaction="ignore", lineterminator="\n"
            )
            writer.writeheader()
            writer.writerows(records())
    _emit_warnings(caught)
    missing = [key for key in keys or () if key not in seen]
    if missing:
        raise _UserError(f"box {box.exp_id!r} never logged {', '.join(missing)}")
    return 0


# -- plot ----------------------------------------------------------------------------


def _cmd_plot(args: argparse.Namespace) -> int:
    box = _boxes.find_box(_results_root(args), args.exp_id)
    keys = list(dict.fromkeys(args.keys))
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError(
            'plotting needs matplotlib; install it with: pip install "expbox[plot]"'
        ) from exc

    series: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in keys}
    start = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for record in _records(box, keys):
            x = record.get(args.x)
            if not isinstance(x, (int, float)):
                continue
            if args.x == "time":
                start = x if start is None else start
                x -= start
            for key in keys:
                y = record.get(key)
                number = isinstance(y, (int, float)) and not isinstance(y, bool)
                if number and math.isfinite(y):
                    series[key][0].append(x)
                    series[key][1].append(y)
    empty = [k for k, (xs, _) in series.items() if not xs]
    if empty:
        raise _UserError(f"box {box.exp_id!r} has no numeric values for {empty}")

    # One panel per metric, sharing the x axis: metrics rarely share a scale.
    fig = Figure(figsize=(8, max(3.0, 2.2 * len(keys))), layout="constrained")
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (key, (xs, ys)) in zip(axes, series.items()):
        ax.plot(xs, ys, linewidth=1.2, marker="." if len(xs) < 50 else None)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step" if args.x == "step" else "seconds since first record")
    fig.suptitle(clip(f"{box.exp_id}: {box.get('title') or ''}".rstrip(": "), 80))
    if args.output:
        out = Path(args.output)
    else:
        name = re.sub(r"[^A-Za-z0-9_.+=-]+", "_", "+".join(keys)).lstrip(".")[:120]
        out = box.paths.figures / f"{name or 'metrics'}.png"
        out.parent.mkdir(exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    _emit_warnings(caught)
    print(safe(out))
    return 0


# -- summary -------------------------------------------------------------------------


def _cmd_summary(args: argparse.Namespace) -> int:
    box = _boxes.find_box(_results_root(args), args.exp_id)
    summary = _boxes.box_summary(box, _read_tail_of(box, max_bytes=1024 * 1024))
    if args.markdown:
        print(markdown_note(box, summary), end="")
    else:
        print(json_text(summary))
    if box.meta is None:
        raise _UserError(f"box {box.exp_id!r}: {box.problem}; the file is corrupt")
    return 0


# -- entry point ---------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and exit status 1."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"expbox: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``expbox`` command."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--results-root",
        default=argparse.SUPPRESS,
        help=f"where the boxes are (default: ${RESULTS_ROOT}, else ./results)",
    )
    parser = _Parser(prog="expbox", description="List and inspect experiment boxes.")
    parser.add_argument("--results-root", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print diagnostics on stderr"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ls = sub.add_parser(
        "ls",
        parents=[common],
        help="list boxes, newest first",
        description="List boxes, newest first. "
        + DURATION_HELP
        + TEXT_HELP
        + " With --json, the same in plain JSON, durations in seconds.",
    )
    ls.add_argument("--keys", help="comma-separated metrics to show (default: a few)")
    ls.add_argument("--project", help="only boxes of this project")
    ls.add_argument(
        "--status", help=f"only these statuses, comma-separated: {_statuses()}"
    )
    ls.add_argument("-n", "--limit", type=int, help="show at most this many boxes")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_cmd_ls)

    show = sub.add_parser(
        "show",
        parents=[common],
        help="metadata, config, files",
        description="Show one box: metadata, config, files and last values. "
        + DURATION_HELP
        + TEXT_HELP,
    )
    show.add_argument("exp_id", metavar="ID")
    show.set_defaults(func=_cmd_show)

    metrics = sub.add_parser("metrics", parents=[common], help="records on stdout")
    metrics.add_argument("exp_id", metavar="ID")
    metrics.add_argument("--keys", help="comma-separated metrics (default: all)")
    metrics.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    metrics.set_defaults(func=_cmd_metrics)

    plot = sub.add_parser("plot", parents=[common], help="plot metrics to a PNG")
    plot.add_argument("exp_id", metavar="ID")
    plot.add_argument("keys", metavar="KEY", nargs="+")
    plot.add_argument("-o", "--output", help="PNG path (default: the box's figures/)")
    plot.add_argument("--x", choices=("step", "time"), default="step")
    plot.set_defaults(func=_cmd_plot)

    summary = sub.add_parser("summary", parents=[common], help="one box as JSON")
    summary.add_argument("exp_id", metavar="ID")
    summary.add_argument(
        "--markdown", action="store_true", help="an Obsidian note with front matter"
    )
    summary.set_defaults(func=_cmd_summary)
    return parser


def _statuses() -> str:
    return ", ".join(_boxes.SHOWN_STATUSES)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``expbox`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("expbox: debug: %(message)s"))
        logging.getLogger("expbox").addHandler(handler)
        logging.getLogger("expbox").setLevel(logging.DEBUG)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader of our output went away (`expbox metrics X | head`): that is
        # its choice, not an error. Point stdout at devnull so the final flush at
        # exit does not raise again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except (_UserError, ExpboxError, ValueError, OSError) as exc:
        logging.getLogger("expbox").debug("command failed", exc_info=True)
        print(f"expbox: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return safe(f"{exc.filename}: {exc.strerror}")
    return safe(" ".join(str(exc).split()) or type(exc).__name__)


if __name__ == "__main__":
    sys.exit(main())
