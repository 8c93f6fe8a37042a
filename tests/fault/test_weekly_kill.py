"""Fault suite, weekly job: SIGKILL at three different steps never touches the live outputs,
the next run removes the staging left behind, and manifests name final paths only."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from index_builder.bundle import current_path
from lookalike.artifacts import read_json, sha256_file
from tests.conftest import REPO_ROOT
from tests.e2e.test_weekly import weekly_config

pytestmark = [pytest.mark.fault, pytest.mark.e2e]

FAST = ["evaluate=true", "baselines=[raw_feature_knn]", "log_mlflow=false"]


def live_state(workspace: Path) -> str:
    """Hash of everything a reader of the workspace can see (staging and the lock excluded)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in workspace.rglob("*") if p.is_file()):
        relative = path.relative_to(workspace)
        if relative.parts[0].startswith(".weekly"):
            continue
        digest.update(str(relative).encode() + sha256_file(path).encode())
    return digest.hexdigest()


def staging_dirs(workspace: Path) -> list[Path]:
    return sorted(p for p in workspace.glob(".weekly-*") if p.is_dir())


def kill_when(argv: list[str], reached: Callable[[], bool], log: Path, timeout_s: float = 300) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout_s
        try:
            while not reached():
                assert process.poll() is None, f"weekly run ended before the kill point:\n{log.read_text()[-2000:]}"
                assert time.time() < deadline, "kill point not reached in time"
                time.sleep(0.02)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def test_sigkill_at_three_steps(trained_model: Any, feature_repo_dir: Path, tmp_path: Path) -> None:
    from index_builder.weekly import run

    workspace = tmp_path / "workspace"
    config = weekly_config(feature_repo_dir, trained_model, workspace, extra=FAST)
    first = run(config)
    before = live_state(workspace)

    argv = [sys.executable, "-m", "lookalike", "weekly", "--config", str(REPO_ROOT / "configs" / "weekly.yaml"),
            f"repo={feature_repo_dir}", f"date={config.date}", f"workspace={workspace}",
            f"model.tracking_uri={trained_model.tracking_uri}", f"model.name={trained_model.model_name}",
            f"model.ref={trained_model.model_version}", *FAST]
    steps: dict[str, Callable[[], bool]] = {
        "embedding anchors": lambda: bool(staging_dirs(workspace)),
        "index written, assigning": lambda: any((s / "index").is_dir() for s in staging_dirs(workspace)),
        "segments written, evaluating": lambda: any((s / "segments").is_dir() for s in staging_dirs(workspace)),
    }
    for step, reached in steps.items():
        left_before = set(staging_dirs(workspace))
        kill_when(argv, reached, tmp_path / f"kill-{len(left_before)}.log")
        assert live_state(workspace) == before, f"live outputs changed by a run killed at: {step}"
        assert len(set(staging_dirs(workspace)) - left_before) == 1, step  # killed runs cannot clean up

    second = run(config)
    assert staging_dirs(workspace) == []  # the leftovers of the three killed runs are gone
    assert current_path(workspace / "segments") == second.segments_dir
    manifests = [p.read_text() for p in workspace.rglob("manifest.json")]
    assert manifests and not any(".weekly-" in text for text in manifests)
    segments = read_json(second.segments_dir / "manifest.json")
    assert Path(segments["index_bundle"]) == second.index_dir.resolve() and second.index_dir.is_dir()
    assert first.index_dir == second.index_dir
