"""Atomic replacement of small files: failures name the file and change nothing."""

from __future__ import annotations

import errno
import os

import pytest

from expbox import atomic


def test_a_failed_fsync_names_the_file_and_keeps_the_old_content(tmp_path, monkeypatch):
    """ENOSPC at fsync raises an OSError naming the target; the old file stays."""
    target = tmp_path / "meta.json"
    target.write_bytes(b"old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(OSError) as caught:
        atomic.atomic_write_bytes(target, b"new")

    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]
