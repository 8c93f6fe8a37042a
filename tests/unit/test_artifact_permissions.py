"""Outputs written atomically are readable by the group, like files made with a plain open()."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lookalike.artifacts import atomic_dir, write_json

pytestmark = pytest.mark.unit


def test_atomic_outputs_get_umask_permissions_not_temp_file_ones(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "bundle") as tmp:
            (tmp / "data.txt").write_text("x")
        write_json(tmp_path / "bundle" / "current.json", {"name": "x"})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "bundle").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "bundle" / "current.json").stat().st_mode) == 0o644
