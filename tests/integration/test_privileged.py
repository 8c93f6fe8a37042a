"""The privileged view (web navigation) against a real Feast registry and a real MLflow store:
read only through the teacher's path and only for consenting customers; refused as a model
input; listed by governance with its single permitted use; the teacher it trains is logged
to the run, never registered, and refused by the loader every downstream stage uses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from lookalike.contract import load_contract
from lookalike.errors import PrivacyViolationError
from lookalike.feast_utils import open_store
from lookalike.governance import GovernanceConfig
from lookalike.governance import run as review_run
from lookalike.privileged import PERMITTED_USE, load_privileged_contract, read_privileged_features
from lookalike.snapshot import opted_in_customers, parse_date
from tests.fixtures.data import LABEL_DATE
from tests.fixtures.model import train_into
from training.artifact import load_registered_encoder
from training.data import load_snapshot

pytestmark = pytest.mark.integration


def test_privileged_view_is_read_only_for_consenting_customers(synthetic_repo_dir: Path) -> None:
    store = open_store(synthetic_repo_dir)
    contract = load_privileged_contract(store)
    assert contract is not None and contract.service_name == "web_navigation"
    assert {f.encoding for f in contract.features} == {"numeric"} and len(contract.features) == 13
    # the model contract never includes it
    assert not set(contract.columns) & set(load_contract(store, "lookalike_legit_v1").columns)

    label_date = parse_date(LABEL_DATE)
    consenting = opted_in_customers(store, label_date)
    frame = read_privileged_features(store, contract, consenting[:20], label_date)
    assert list(frame.columns) == ["customer_id", *contract.columns] and len(frame) == 20
    assert frame["customer_id"].tolist() == consenting[:20].tolist()
    assert frame[contract.columns].dtypes.eq("float64").all()

    everyone = np.arange(1, 301, dtype=np.int64)
    not_consenting = np.setdiff1d(everyone, consenting)[:1]
    with pytest.raises(PrivacyViolationError, match="no valid consent"):
        read_privileged_features(store, contract, np.r_[consenting[:5], not_consenting], label_date)


def test_governance_lists_the_privileged_view_and_its_single_use(synthetic_repo_dir: Path, tmp_path: Path) -> None:
    report = review_run(GovernanceConfig(repo=synthetic_repo_dir, out=tmp_path))
    assert report.verdict == "PASS", report.problems
    views = {v["name"]: v for v in json.loads((tmp_path / "governance_review.json").read_text())["views"]}
    assert views["web_navigation"]["role"] == "privileged"
    assert views["web_navigation"]["legal_basis"] == "consent"
    assert views["web_navigation"]["permitted_use"] == PERMITTED_USE
    assert all(not v["permitted_use"] for name, v in views.items() if name != "web_navigation")
    markdown = (tmp_path / "governance_review.md").read_text()
    assert f"| `web_navigation` | consent | {PERMITTED_USE} |" in markdown


@pytest.fixture(scope="module")
def training_snapshot_dir(synthetic_repo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real snapshot of the small synthetic repo (no Spark), opt-in customers at LABEL_DATE."""
    from lookalike.snapshot import SnapshotConfig, run

    return run(SnapshotConfig(repo=synthetic_repo_dir, label_date=LABEL_DATE, out=tmp_path_factory.mktemp("snap")))


def test_teacher_is_a_run_artifact_never_a_servable_model(
    training_snapshot_dir: Path, synthetic_repo_dir: Path, tmp_path: Path
) -> None:
    result = train_into(Path(training_snapshot_dir), tmp_path, [
        f"repo={synthetic_repo_dir}", "min_customers=30", "distill.enabled=true", "distill.modes=[similarity]", "distill.weights=[0.5]",
        "tracking.promote=always", "tracking.model_name=distill-test",
    ])
    client = MlflowClient(result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.tags["teacher_servable"] == "false"
    assert run.data.tags["teacher_inputs"] == "lookalike_legit_v1+web_navigation"
    assert {"teacher_test_mae", "teacher_val_knn_micro_f1", "distill_weight"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "teacher")}
    assert artifacts == {"teacher/checkpoint.pt", "teacher/distillation.json"}

    # exactly one registered version: the student, on legitimate-interest inputs only
    versions = client.search_model_versions("name='distill-test'")
    assert [str(v.version) for v in versions] == ["1"]
    student, _ = load_registered_encoder(result.tracking_uri, "distill-test", "champion")
    snapshot = load_snapshot(training_snapshot_dir, 1)
    assert student.contract == snapshot.contract
    summary = student.metadata["distillation"]
    assert summary["chosen"] in {"none", "similarity@0.5"} and len(summary["candidates"]) == 2

    # someone registers the teacher by hand: index builder, assignment and serving all load
    # models through load_registered_encoder, which refuses it
    teacher_version = client.create_model_version("distill-test", f"{run.info.artifact_uri}/teacher",
                                                  run_id=result.run_id).version
    with pytest.raises(PrivacyViolationError, match="teacher checkpoint"):
        load_registered_encoder(result.tracking_uri, "distill-test", str(teacher_version))


def test_distillation_without_a_privileged_view_trains_the_plain_student(
    training_snapshot_dir: Path, tmp_path: Path
) -> None:
    result = train_into(Path(training_snapshot_dir), tmp_path, ["distill.enabled=true", "tracking.promote=always",
                                                                "min_customers=30"])
    run = MlflowClient(result.tracking_uri).get_run(result.run_id)
    assert "teacher_servable" not in run.data.tags and "distillation" not in result.encoder.metadata
    assert isinstance(result.encoder.embed(pd.read_parquet(Path(training_snapshot_dir) / "data.parquet")),
                      np.ndarray)
