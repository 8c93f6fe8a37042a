"""A registered model version is complete: signature and input example from the feature
contract, a description, a model card, the training snapshot as a dataset input, and
artifacts beside its own tracking store (a copied store is refused, not written through)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from lookalike.errors import ConfigError
from tests.fixtures.model import train_into


@pytest.fixture(scope="module")
def registered(training_snapshot_dir: Path, feature_repo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("registry")
    # No artifact_location: the default must put artifacts beside the SQLite store.
    result = train_into(Path(training_snapshot_dir), root, [
        f"repo={feature_repo_dir}", "tracking.experiment=lookalike-card", "tracking.promote=always",
        "tracking.artifact_location=null"])
    return root, result


def _contract(snapshot_dir: Path) -> Any:
    from training.data import load_snapshot

    return load_snapshot(snapshot_dir, 1).contract


@pytest.mark.integration
def test_signature_and_input_example_follow_the_feature_contract(registered: Any, training_snapshot_dir: Path) -> None:
    _, result = registered
    contract = _contract(training_snapshot_dir)
    uri = f"models:/{result.model_name}/{result.model_version}"
    mlflow.set_registry_uri(result.tracking_uri)
    mlflow.set_tracking_uri(result.tracking_uri)
    info = mlflow.models.get_model_info(uri)
    inputs = info.signature.inputs.to_dict()
    assert [c["name"] for c in inputs] == contract.columns
    types = {c["name"]: c["type"] for c in inputs}
    for feature in contract.features:
        expected = {"Bool": "boolean", "String": "string"}.get(feature.dtype, "double")
        assert types[feature.column] == expected, feature
    output = info.signature.outputs.to_dict()[0]
    assert list(output["tensor-spec"]["shape"]) == [-1, result.encoder.embedding_dim]

    model = mlflow.pyfunc.load_model(uri)
    example = model.input_example
    assert list(example.columns) == contract.columns  # no customer id, no label
    embeddings = model.predict(example)
    assert embeddings.shape == (len(example), result.encoder.embedding_dim)
    np.testing.assert_allclose(embeddings, result.encoder.embed(example), rtol=1e-5, atol=1e-6)


@pytest.mark.integration
def test_version_description_and_model_card(registered: Any, training_snapshot_dir: Path) -> None:
    _, result = registered
    contract = _contract(training_snapshot_dir)
    client = MlflowClient(tracking_uri=result.tracking_uri, registry_uri=result.tracking_uri)
    version = client.get_model_version(result.model_name, result.model_version)
    assert contract.service_name in version.description
    assert f"{result.raw_knn_micro_f1:.3f}" in version.description
    assert version.tags["model_card"] == f"runs:/{result.run_id}/model_card.md"

    card = mlflow.artifacts.load_text(f"{client.get_run(result.run_id).info.artifact_uri}/model_card.md")
    assert f"# Model card: {result.model_name} v{result.model_version}" in card
    for heading in ("## Data", "## Feature views by legal basis", "## Metrics against baselines",
                    "## Segments the features cannot recover", "## Limits"):
        assert heading in card, heading
    for view in contract.views:
        assert f"| legitimate_interest | {view} |" in card
    # The registry's other views appear with their own basis and are marked as not inputs.
    assert "| consent | web_navigation | - | not a model input" in card
    assert "| consent | segment_labels | - | not a model input" in card
    assert f"{result.raw_knn_micro_f1:.4f} (raw-feature kNN)" in card
    assert f"{result.val_knn_micro_f1:.4f}" in card


@pytest.mark.integration
def test_training_snapshot_is_a_dataset_input(registered: Any, training_snapshot_dir: Path) -> None:
    from training.data import load_snapshot

    _, result = registered
    snapshot = load_snapshot(training_snapshot_dir, 1)
    run = MlflowClient(tracking_uri=result.tracking_uri).get_run(result.run_id)
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
    assert dataset.digest == snapshot.content_hash[:32]
    assert str(Path(training_snapshot_dir).resolve() / "data.parquet") in dataset.source
    assert all(column in dataset.schema for column in snapshot.contract.columns)


@pytest.mark.integration
def test_artifacts_live_beside_the_store_and_a_copied_store_is_refused(
    registered: Any, training_snapshot_dir: Path, tmp_path: Path
) -> None:
    from lookalike.config import load_config
    from lookalike.mlflow_store import ensure_experiment
    from training.config import TrainConfig
    from training.train import run

    root, result = registered
    client = MlflowClient(tracking_uri=result.tracking_uri)
    artifact_uri = client.get_run(result.run_id).info.artifact_uri
    assert artifact_uri.startswith((root / "mlartifacts").resolve().as_uri())

    # A checkout copied with its mlflow.db: the experiment still names the original's artifacts.
    copy = tmp_path / "copied_checkout"
    copy.mkdir()
    shutil.copy2(root / "mlflow.db", copy / "mlflow.db")
    copied_uri = f"sqlite:///{copy / 'mlflow.db'}"
    with pytest.raises(ConfigError, match="copied from another checkout") as refused:
        ensure_experiment(MlflowClient(tracking_uri=copied_uri), "lookalike-card", copied_uri)
    assert "\n" not in str(refused.value) and str(root) in str(refused.value)

    runs_before = len(MlflowClient(tracking_uri=copied_uri).search_runs(
        [client.get_experiment_by_name("lookalike-card").experiment_id]))
    config = load_config(TrainConfig, None, [f"snapshot={training_snapshot_dir}", "min_customers=50",
                                             f"tracking.tracking_uri={copied_uri}",
                                             "tracking.experiment=lookalike-card"])
    with pytest.raises(ConfigError, match="copied from another checkout"):
        run(config)
    copied = MlflowClient(tracking_uri=copied_uri)
    assert len(copied.search_runs([copied.get_experiment_by_name("lookalike-card").experiment_id])) == runs_before
    assert not (copy / "mlartifacts").exists()


@pytest.mark.unit
def test_tracking_uri_defaults_to_the_mlflow_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from index_builder.config import ModelRef
    from training.config import TrackingConfig

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert TrackingConfig().tracking_uri == "http://mlflow.internal:5000"
    assert ModelRef().tracking_uri == "http://mlflow.internal:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert TrackingConfig().tracking_uri == "sqlite:///mlflow.db"
