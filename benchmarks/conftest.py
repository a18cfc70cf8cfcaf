"""Collect ``bench_*.py`` and print a table of ratios against their goals.

Run the suite with ``python -m pytest benchmarks/ --benchmark-only``. The normal test
run (``testpaths = ["tests"]``) never collects this directory. Each benchmark measures
expbox and its baseline in the same run, in interleaved rounds after
``gc.collect()``, and reports the ratio of medians: a ratio is comparable between
machines, an absolute time is not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import pytest

_ROWS: list[dict[str, Any]] = []


def pytest_collect_file(file_path: Path, parent: Any) -> Optional[pytest.Module]:
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture
def report() -> Callable[..., None]:
    """Add a row to the table printed at the end of the session."""

    def add(
        name: str,
        ratio: float,
        goal: Optional[float],
        accept: Optional[float],
        detail: str,
    ) -> None:
        _ROWS.append(
            {
                "name": name,
                "ratio": ratio,
                "goal": goal,
                "accept": accept,
                "detail": detail,
            }
        )

    return add


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ROWS:
        return
    write = terminalreporter.write_line
    write("")
    write("expbox benchmarks: ratio of medians against a baseline measured in the run")
    header = f"{'benchmark':<44} {'ratio':>8} {'goal':>6} {'accept':>7}  verdict"
    write(header)
    write("-" * len(header))
    for row in _ROWS:
        goal, accept, ratio = row["goal"], row["accept"], row["ratio"]
        if goal is None:
            verdict = "(info)"
        elif ratio <= goal:
            verdict = "meets goal"
        elif accept is not None and ratio <= accept:
            verdict = "acceptable"
        else:
            verdict = "MISSES"
        write(
            f"{row['name']:<44} {ratio:>8.2f} {_fmt(goal):>6} {_fmt(accept):>7}  "
            f"{verdict}"
        )
        write(f"    {row['detail']}")


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:g}"
