"""``feast ui`` as a data engineer runs it: the real CLI on a loopback port over an applied
copy of the feature repo. It needs grpcio (Feast's ``grpcio`` extra): the UI mounts the
registry REST API, which is built on Feast's gRPC registry server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lookalike.local_redis import free_port
from tests.fixtures.feast import apply_repo
from tests.server_process import stop, wait_until_ready

FEAST = Path(sys.executable).with_name("feast")
START_TIMEOUT_S = 90


@pytest.mark.integration
def test_feast_ui_serves_the_page_and_the_registry_api(tmp_path: Path) -> None:
    repo = apply_repo(tmp_path / "feature_repo", tmp_path / "features")
    port = free_port()
    log_path = tmp_path / "feast_ui.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(FEAST), "ui", "--host", "127.0.0.1", "--port", str(port)],
            cwd=repo, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/health", process, log_path, START_TIMEOUT_S)
        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200, page.text[:500]
        assert "<html" in page.text.lower()

        projects = httpx.get(f"{base}/projects-list.json", timeout=10)
        assert projects.status_code == 200
        assert [p["id"] for p in projects.json()["projects"]] == ["lookalike"]

        services = httpx.get(f"{base}/api/v1/feature_services", params={"project": "lookalike"}, timeout=30)
        assert services.status_code == 200, services.text[:500]
        names = {s["spec"]["name"] for s in services.json()["featureServices"]}
        assert "lookalike_legit_v1" in names
    finally:
        stop(process)
