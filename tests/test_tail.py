"""Tests for reading the end of a metrics file that is not a plain file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from expbox.tail import read_tail


def test_a_directory_in_place_of_the_metrics_file_is_an_os_error(
    tmp_path: Path,
) -> None:
    """read_tail of a directory raises IsADirectoryError naming the path."""
    metrics = tmp_path / "metrics.jsonl"
    metrics.mkdir()

    with pytest.raises(IsADirectoryError) as caught:
        read_tail(metrics)

    assert caught.value.filename == str(metrics)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_in_place_of_the_metrics_file_is_refused_at_once(
    tmp_path: Path,
) -> None:
    """read_tail of a FIFO with no writer raises instead of waiting for one."""
    metrics = tmp_path / "metrics.jsonl"
    os.mkfifo(metrics)
    code = (
        "import sys\n"
        "from expbox.tail import read_tail\n"
        "try:\n"
        "    read_tail(sys.argv[1])\n"
        "except OSError as exc:\n"
        "    print(exc.strerror)\n"
    )

    # A child, so that a read that blocks fails the test by timeout, not hangs it.
    result = subprocess.run(
        [sys.executable, "-c", code, str(metrics)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "not a regular file"


def test_a_regular_file_still_reads_from_its_end(tmp_path: Path) -> None:
    """A plain metrics file gives its last step and values as before."""
    metrics = tmp_path / "metrics.jsonl"
    lines = [
        json.dumps({"step": i, "time": 1.0, "loss": 1 / (i + 1)}) for i in range(3)
    ]
    metrics.write_text("\n".join(lines) + "\n")

    tail = read_tail(metrics)

    assert tail.last_step == 2 and tail.values == {"loss": 1 / 3}
