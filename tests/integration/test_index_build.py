from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index_builder.bundle import current_path, load_bundle
from index_builder.config import AssignmentParams
from lookalike.errors import ArtifactError
from tests.fixtures.data import RUN_DATE
from tests.fixtures.index import build_config

pytestmark = pytest.mark.integration


def test_bundle_follows_the_contract(index_bundle_dir: Path, trained_model, feature_store) -> None:  # type: ignore[no-untyped-def]
    from index_builder.population import load_population, parse_date

    bundle = load_bundle(index_bundle_dir)
    manifest = bundle.manifest
    assert manifest["kind"] == "index_bundle" and manifest["metric"] == "cosine"
    assert manifest["model_version"] == trained_model.model_version
    assert manifest["feature_service"] == "lookalike_legit_v1" and manifest["run_date"] == RUN_DATE
    assert manifest["index_type"] == "flat" and manifest["recall_at_k"] == 1.0
    assert manifest["built_on"] == "cpu"
    # anchors are exactly the opt-in, labelled, non-suppressed customers with features
    population = load_population(feature_store, parse_date(RUN_DATE))
    anchors = set(population.customer_ids[population.anchor_mask].tolist())
    assert set(bundle.anchor_ids.tolist()) <= anchors
    assert len(bundle.anchor_ids) >= 0.95 * len(anchors)
    assert not set(bundle.anchor_ids.tolist()) & set(population.customer_ids[population.suppressed].tolist())
    assert bundle.anchor_segments.shape == (len(bundle.anchor_ids), len(bundle.segments))
    spec = bundle.assignment
    assert spec.k == AssignmentParams().k and spec.aggregation == "weighted" and len(spec.thresholds) == len(bundle.segments)
    assert all(0.0 <= t <= 1.0 for t in spec.thresholds) and "calibrated" in spec.threshold_source
    assert manifest["counts"]["calibration_customers"] > 50
    # a scorer, its out-of-sample F1 and threshold per segment; catalog names for display
    selection = bundle.selection
    assert selection is not None and selection.names == bundle.segments
    assert set(selection.scorers) == {"tower_knn", "logistic_regression", "tower_head", "raw_feature_knn",
                                      "iv_weighted_knn", "gradient_boosting", "blend"}
    # the blend averages the candidates scored on every non-test anchor (the tower too, by its fold towers)
    assert {"logistic_regression", "raw_feature_knn", "iv_weighted_knn", "gradient_boosting"} <= set(
        selection.blend_members)
    assert np.allclose(selection.thresholds, spec.thresholds)
    assert all(c.scorer in selection.scorers for c in selection.segments if c.shipped)
    assert spec.segment_names and set(spec.segment_names) <= set(bundle.segments)


def test_build_is_logged_to_mlflow(index_bundle_dir: Path, trained_model) -> None:  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=trained_model.tracking_uri)
    experiment = client.get_experiment_by_name("lookalike-index")
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.index_version = '{load_bundle(index_bundle_dir).index_version}'")
    assert runs and runs[0].data.tags["model_version"] == trained_model.model_version
    files = {a.path for a in client.list_artifacts(runs[0].info.run_id, "index_bundle")}
    assert "index_bundle/index.faiss" in files and "index_bundle/assignment.json" in files


def test_hnsw_build_records_recall_and_becomes_current(tmp_path: Path, trained_model, feature_repo_dir) -> None:  # type: ignore[no-untyped-def]
    from index_builder.build import run

    config = build_config(feature_repo_dir, trained_model, tmp_path / "index",
                          ["index.type=hnsw", "index.hnsw_m=16", "log_mlflow=false", "assignment.aggregation=majority",
                           "assignment.threshold_mode=fixed"])
    out = run(config)
    assert current_path(tmp_path / "index") == out
    bundle = load_bundle(out)
    assert bundle.manifest["index_type"] == "hnsw" and bundle.manifest["recall_at_k"] >= 0.95
    assert set(bundle.assignment.thresholds) == {0.5}
    scores = bundle.score(np.random.default_rng(0).normal(size=(5, bundle.manifest["dim"])))
    assert scores.shape == (5, len(bundle.segments))


def test_missing_model_version_is_a_clean_error(tmp_path: Path, trained_model, feature_repo_dir) -> None:  # type: ignore[no-untyped-def]
    from index_builder.build import run

    with pytest.raises(ArtifactError, match="no version or alias '999'"):
        run(build_config(feature_repo_dir, trained_model, tmp_path / "index", ["model.ref=999"]))
    assert not (tmp_path / "index").exists() or not any((tmp_path / "index").iterdir())
