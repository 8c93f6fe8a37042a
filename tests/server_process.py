"""Helpers for tests that start a real server subprocess (feast ui, bentoml serve, mlflow
server): wait until it answers over HTTP, then stop it and everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 240,
                     expect_status: int | None = 200) -> None:
    """Poll ``url`` until it answers (with ``expect_status`` when given); fail with the
    server's log tail if the process exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            pytest.fail(f"server exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"server not ready within {timeout_s} s:\n{log_path.read_text()[-3000:]}")
        try:
            status = httpx.get(url, timeout=2).status_code
            if expect_status is None or status == expect_status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


def stop(process: subprocess.Popen[bytes], own_group: bool = False) -> None:
    """SIGTERM, then SIGKILL after 20 s; ``own_group``: the process was started with
    ``start_new_session=True`` and its workers are stopped with it."""
    def send(sig: int) -> None:
        if own_group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)

    if process.poll() is not None:
        return
    send(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(timeout=10)
