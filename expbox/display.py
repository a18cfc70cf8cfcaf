"""How the ``expbox`` command shows boxes: safe text, tables, durations, values.

Kept apart from the parser and the commands so that each command says what it
shows and this module alone decides how: escaping what a box could use to drive
the terminal, the layout of a table, the units of a duration.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import boxes as _boxes

# Characters a box's text must not put raw on a terminal: C0 and C1 controls
# (newlines break a table row, ESC starts an escape sequence), Unicode line
# breaks, bidirectional overrides, and lone surrogates from undecodable names.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
# The same, less the C0 controls that JSON itself already escapes.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
TEXT_HELP = (
    " Control characters in ids, titles, names and values are shown escaped"
    " (\\x1b, \\n)."
)
DURATION_HELP = (
    "DURATION is in tenths of a second under a second (0.4s), whole seconds under "
    "a minute, then 2m05s, 3h07m, 2d04h."
)


def safe(text: Any) -> str:
    """``text`` for a terminal: unsafe characters written as Python escapes
    (``\\x1b``, ``\\n``), so a box cannot break the layout or drive the terminal."""
    text = str(text)
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(lambda m: repr(m.group())[1:-1], text)


def safe_paragraph(text: Any) -> str:
    """Free text for the body of a note: its own line breaks kept, all else safe."""
    return "\n".join(safe(line) for line in str(text).split("\n"))


def json_text(value: Any) -> str:
    """Indented JSON that keeps non-ASCII text readable, with the characters a
    terminal would act on written as ``\\u`` escapes (still the same JSON)."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def format_value(value: Any) -> str:
    """A metric value in a table cell: floats to 6 significant digits, text clipped."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = safe(value)
    return text if len(text) <= 24 else text[:23] + "…"


def format_duration(seconds: float | None) -> str:
    """A duration in the units ``DURATION_HELP`` describes, or ``-`` if unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        # Rounded down, like the longer durations: a run of 0.96 s is not "1.0s".
        return f"{math.floor(seconds * 10) / 10:.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_created(box: _boxes.BoxInfo) -> str:
    """When the box was created, in local time to the minute, or ``-``."""
    if box.created is None:
        return "-"
    return box.created.astimezone().strftime("%Y-%m-%d %H:%M")


def format_size(size: int) -> str:
    """A file size in B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def clip(text: Any, width: int) -> str:
    """Safe text cut to ``width`` characters with an ellipsis; ``-`` when empty."""
    text = "-" if text in (None, "") else safe(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(header: Sequence[str], rows: list[list[str]]) -> None:
    """Print left-aligned columns two spaces apart, each as wide as its widest cell."""
    widths = [max(len(r[i]) for r in [list(header), *rows]) for i in range(len(header))]
    for row in [list(header), *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        print("  ".join(cells).rstrip())


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Pairs of dotted key and leaf value of nested dicts (``a.b``, 1)."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def markdown_note(box: _boxes.BoxInfo, summary: dict[str, Any]) -> str:
    """An Obsidian note: YAML front matter with the summary, then a readable body."""
    import yaml

    front = dict(summary)
    front["tags"] = ["expbox"] + ([summary["project"]] if summary["project"] else [])
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip()]
    lines += ["---", "", f"# {safe(summary['title'] or summary['id'])}", ""]
    if summary["purpose"]:
        lines += [safe_paragraph(summary["purpose"]), ""]
    lines += [
        f"- box: `{safe(summary['id'])}` ({safe(summary['status'])})",
        f"- path: {safe(box.path)}",
    ]
    if summary["wandb_url"]:
        lines.append(f"- W&B: {safe(summary['wandb_url'])}")
    finals = {k[6:]: v for k, v in summary.items() if k.startswith("final.")}
    if finals:
        lines += ["", f"## Final metrics (step {summary['last_step']})", ""]
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {safe(k)} | {format_value(v)} |" for k, v in finals.items()]
    if summary["final_note"]:
        lines += ["", "## Note", "", safe_paragraph(summary["final_note"])]
    return "\n".join(lines) + "\n"
