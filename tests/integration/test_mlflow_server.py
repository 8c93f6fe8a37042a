"""Artifact locations relative to the tracking server: against a real ``mlflow server
--serve-artifacts`` (the flags of infra/docker-compose.yaml), an experiment created by the
project records ``mlflow-artifacts:/`` URIs and artifacts land in the server's store, not
in the client's filesystem."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from lookalike.local_redis import free_port
from lookalike.mlflow_store import ensure_experiment
from tests.conftest import REPO_ROOT
from tests.server_process import stop, wait_until_ready

MLFLOW = Path(sys.executable).with_name("mlflow")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    compose = yaml.safe_load((REPO_ROOT / "infra" / "docker-compose.yaml").read_text())
    flags = [flag for flag in compose["services"]["mlflow"]["command"][2:]
             if not flag.startswith(("--host", "--port", "--backend-store-uri", "--artifacts-destination",
                                     "--allowed-hosts"))]
    assert "--serve-artifacts" in flags
    log_path = root / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"), *flags],
            cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/health", process, log_path, timeout_s=120)
        yield url, root / "artifacts"
    finally:
        stop(process, own_group=True)  # the server's workers share its process group


@pytest.mark.integration
def test_runs_against_a_tracking_server_store_artifacts_relative_to_it(
    mlflow_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, server_artifacts = mlflow_server
    monkeypatch.chdir(tmp_path)  # nothing may be written on the client side
    client = MlflowClient(tracking_uri=url)
    experiment_id = ensure_experiment(client, "lookalike", url)
    assert client.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:/")
    assert ensure_experiment(client, "lookalike", url) == experiment_id  # reuse, no refusal

    run = client.create_run(experiment_id)
    client.log_text(run.info.run_id, "model card", "model_card.md")
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).info.artifact_uri.startswith("mlflow-artifacts:/")
    stored = list(server_artifacts.rglob("model_card.md"))
    assert len(stored) == 1 and stored[0].read_text() == "model card"
    assert list(tmp_path.iterdir()) == []
