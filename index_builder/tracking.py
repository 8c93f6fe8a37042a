"""MLflow logging for the index-builder stages (runs tagged with the model version)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lookalike.mlflow_store import ensure_experiment

log = logging.getLogger(__name__)


def log_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, Any],
    metrics: dict[str, float],
    artifact_dirs: dict[str, Path],
) -> str:
    """One MLflow run with params, metrics and artifact directories; returns the run id."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = ensure_experiment(client, experiment, tracking_uri)
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    for key, value in params.items():
        client.log_param(run_id, key, str(value)[:500])
    for key, value in metrics.items():
        if value is not None:
            client.log_metric(run_id, key, float(value))
    for name, directory in artifact_dirs.items():
        client.log_artifacts(run_id, str(directory), artifact_path=name)
    client.set_terminated(run_id)
    log.info("logged MLflow run %s (%s) in experiment %s", run_id, run_name, experiment)
    del mlflow
    return str(run_id)
