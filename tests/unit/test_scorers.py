"""Candidate scorers: batched IV-kNN and merged LightGBM agree with the per-segment paths, the
leave-one-out IV-kNN scores cannot see their own label, and the feature-kNN scale guard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from index_builder.booster_merge import merge_boosters
from index_builder.build import build_bundle_from_arrays
from index_builder.bundle import load_bundle
from index_builder.config import AssignmentParams
from index_builder.evaluate import SELECTED, MethodResult, write_evaluation
from index_builder.faiss_backend import IndexParams
from index_builder.metrics import segment_metrics
from index_builder.scorers import (
    MERGED_BOOSTER_MAX_ROWS,
    AnchorData,
    ScorerParams,
    feature_knn_guard,
    fit_scorers,
    fold_ids,
    iv_weights,
    out_of_sample,
    weighted_knn_votes,
)

pytestmark = pytest.mark.unit


def anchors(n: int = 400, segments: int = 6, seed: int = 0) -> AnchorData:
    """z-scored numerics next to one-hot columns, like ``encoder.feature_matrix``; segments
    depend on a few columns, one segment on nothing (the constant IV path)."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, 10))
    onehot = np.eye(5)[rng.integers(0, 5, n)]
    features = np.hstack([numeric, onehot]).astype(np.float32)
    labels = np.zeros((n, segments), dtype=bool)
    for j in range(segments - 1):
        labels[:, j] = numeric[:, j] + onehot[:, j % 5] + rng.normal(scale=0.7, size=n) > 0.8
    embeddings = rng.normal(size=(n, 8)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    split = np.array(["train", "validation", "test"])[rng.choice(3, n, p=[0.6, 0.25, 0.15])]
    return AnchorData(embeddings, features, sp.csr_matrix(labels), split)


def per_segment_vote(pool: np.ndarray, holders: np.ndarray, queries: np.ndarray, weights: np.ndarray, k: int,
                     exclude_rows: np.ndarray | None = None) -> np.ndarray:
    """The previous serving path, one segment per call (kept here as the reference)."""
    k = min(k, pool.shape[0] - (1 if exclude_rows is not None else 0))
    squared = (weights * weights).astype(np.float32)
    pool_norm = np.sqrt(np.maximum((pool * pool) @ squared, 1e-12)).astype(np.float32)
    q_norm = np.sqrt(np.maximum((queries * queries) @ squared, 1e-12))
    sims = ((queries * squared) @ pool.T) / (q_norm[:, None] * pool_norm[None, :])
    if exclude_rows is not None:
        mine = np.flatnonzero(exclude_rows >= 0)
        sims[mine, exclude_rows[mine]] = -np.inf
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return np.asarray(holders, np.float32)[top].mean(axis=1)


@pytest.mark.parametrize("memory_bytes", [1, 2 << 20])  # one query per block, and the default
def test_batched_iv_knn_equals_the_per_segment_path(memory_bytes: int) -> None:
    data = anchors()
    x, y = data.features, data.dense_labels(np.arange(len(data.split)))
    weights, constant = iv_weights(x, y)
    voting = np.flatnonzero(np.isnan(constant))
    assert len(voting) >= 4
    queries = x[:120] + np.float32(0.01)
    exclude = np.where(np.arange(120) % 3 == 0, np.arange(120), -1)
    batched = weighted_knn_votes(x, y[:, voting], queries, weights[voting], 15, exclude, memory_bytes=memory_bytes)
    reference = np.column_stack([per_segment_vote(x, y[:, j], queries, weights[j], 15, exclude) for j in voting])
    np.testing.assert_array_equal(batched, reference)


def test_fitted_iv_knn_scores_any_column_subset_like_the_reference() -> None:
    data = anchors()
    fitted = fit_scorers(["iv_weighted_knn"], data, ScorerParams(k=12, aggregation="majority"))
    x, y = data.features, data.dense_labels(np.arange(len(data.split)))
    queries = x[:50]
    columns = np.asarray([5, 2, 0])  # includes the constant segment, out of order
    got = fitted.score("iv_weighted_knn", data.embeddings[:50], queries, columns, np.arange(50))
    constant = fitted.arrays["iv_constant"]
    for i, j in enumerate(columns):
        expected = (np.full(50, constant[j], np.float32) if not np.isnan(constant[j]) else
                    per_segment_vote(x, y[:, j], queries, fitted.arrays["iv_weights"][j], 12, np.arange(50)))
        np.testing.assert_array_equal(got[:, i], expected)


def test_iv_knn_out_of_sample_weights_come_from_the_other_folds() -> None:
    data = anchors(n=300, seed=2)
    params = ScorerParams(k=10, aggregation="majority", folds=5, seed=3)
    oos = out_of_sample("iv_weighted_knn", data, params)
    assert oos is not None
    rows = data.fit_rows
    x, y = data.features[rows], data.dense_labels(rows)
    folds = fold_ids(len(rows), params.folds, params.seed)
    for fold in range(params.folds):
        held = np.flatnonzero(folds == fold)
        weights, constant = iv_weights(x[folds != fold], y[folds != fold])
        for j in range(y.shape[1]):
            expected = (np.full(len(held), constant[j], np.float32) if not np.isnan(constant[j]) else
                        per_segment_vote(x, y[:, j], x[held], weights[j], 10, held))
            np.testing.assert_array_equal(oos.scores[held, j], expected)


def test_an_anchor_label_never_reaches_its_own_out_of_sample_iv_knn_score() -> None:
    data = anchors(n=200, seed=4)
    params = ScorerParams(k=10, aggregation="majority")
    base = out_of_sample("iv_weighted_knn", data, params)
    assert base is not None
    rows = data.fit_rows
    x, dense = data.features[rows], data.labels.toarray().astype(bool)

    def leaky_own_scores(y: np.ndarray, probe: int) -> np.ndarray:
        """The previous path: weights from every row, the probe's own label included."""
        weights, constant = iv_weights(x, y)
        return np.asarray([constant[j] if not np.isnan(constant[j]) else
                           per_segment_vote(x, y[:, j], x[probe:probe + 1], weights[j], 10, np.asarray([probe]))[0]
                           for j in range(y.shape[1])])

    leak_seen = False
    for probe in range(0, len(rows), len(rows) // 10):
        flipped = dense.copy()
        flipped[rows[probe]] = ~flipped[rows[probe]]
        after = out_of_sample("iv_weighted_knn", AnchorData(data.embeddings, data.features, sp.csr_matrix(flipped),
                                                            data.split), params)
        assert after is not None
        np.testing.assert_array_equal(after.scores[probe], base.scores[probe])
        assert not np.array_equal(after.scores, base.scores)  # the flip does reach the other anchors
        leak_seen |= not np.array_equal(leaky_own_scores(dense[rows], probe), leaky_own_scores(flipped[rows], probe))
    assert leak_seen, "no probe would have exposed the old leak: the test data is too weak to show anything"


# ---------------------------------------------------------------- LightGBM
def boosters(seed: int = 0) -> tuple[list[Any], np.ndarray]:
    """Binary models on the same columns: one trained with NaNs (missing values learned), one
    that stops after a few trees (unequal tree counts), and plain ones."""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 8))
    x[:, 3] = np.round(x[:, 3])  # repeated values: thresholds fall between them
    out = []
    for j, trees in enumerate([40, 40, 3, 25]):
        xj = x.copy()
        if j == 1:
            xj[rng.random(600) < 0.2, 0] = np.nan
        y = (x[:, j] + 0.5 * x[:, 3] + rng.normal(scale=0.5, size=600) > 0.3).astype(int)
        model = lgb.LGBMClassifier(n_estimators=trees, num_leaves=7, min_child_samples=10, verbose=-1, n_jobs=1)
        out.append(model.fit(xj, y).booster_)
    return out, x


def thresholds_of(booster: Any) -> dict[int, list[float]]:
    found: dict[int, list[float]] = {}

    def walk(node: dict[str, Any]) -> None:
        if "split_feature" in node:
            found.setdefault(node["split_feature"], []).append(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return found


def test_merged_boosters_match_each_booster_on_random_nan_and_threshold_inputs() -> None:
    models, x = boosters()
    rng = np.random.default_rng(1)
    queries = [rng.normal(size=(200, 8)), x[:50]]
    with_nan = rng.normal(size=(100, 8))
    with_nan[rng.random(with_nan.shape) < 0.3] = np.nan
    queries.append(with_nan)
    edge = []
    for model in models:
        for feature, values in thresholds_of(model).items():
            on = np.repeat(x[:1], len(values), axis=0)
            on[:, feature] = values  # exactly on the split value: LightGBM sends it left (<=)
            above = on.copy()
            above[:, feature] = np.nextafter(values, np.inf)
            edge += [on, above]
    queries.append(np.vstack(edge))
    assert len(queries[-1]) > 50
    merged = merge_boosters(models)
    for q in queries:
        expected = np.column_stack([m.predict(q) for m in models]).astype(np.float32)
        # the sigmoid is evaluated in NumPy instead of LightGBM's C++: float32 results agree
        # to rounding (measured: exactly equal on the bench bundle's 60 segments)
        np.testing.assert_allclose(merged.predict(q), expected, rtol=0, atol=1e-6)


def test_gradient_boosting_scores_agree_for_small_and_large_requests() -> None:
    data = anchors(n=500, seed=5)
    fitted = fit_scorers(["gradient_boosting"], data, ScorerParams(k=10, aggregation="majority", gbm_trees=20))
    columns = np.arange(data.labels.shape[1])
    rows = MERGED_BOOSTER_MAX_ROWS + 40
    big = fitted.score("gradient_boosting", data.embeddings[:rows], data.features[:rows], columns)
    small = np.vstack([fitted.score("gradient_boosting", data.embeddings[i:i + 1], data.features[i:i + 1], columns)
                       for i in range(rows)])
    np.testing.assert_allclose(small, big, rtol=0, atol=1e-6)
    assert isinstance(fitted.boosters[-1], float)  # the segment with no holders' signal is a constant
    expected = np.column_stack([
        np.full(rows, m, np.float32) if isinstance(m, float) else m.predict(data.features[:rows])
        for m in fitted.boosters])
    np.testing.assert_allclose(big, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- scale guard
def test_feature_knn_guard_drops_only_the_feature_space_knn_scorers() -> None:
    names = ["logistic_regression", "tower_knn", "raw_feature_knn", "iv_weighted_knn", "gradient_boosting"]
    assert feature_knn_guard(names, 10_000, 10_000) == (names, {})
    kept, excluded = feature_knn_guard(names, 10_001, 10_000)
    assert kept == ["logistic_regression", "tower_knn", "gradient_boosting"]
    assert set(excluded) == {"raw_feature_knn", "iv_weighted_knn"}
    assert all("feature_knn_max_anchors=10,000" in why and "10,001 anchors" in why for why in excluded.values())


def test_bundle_records_why_feature_knn_scorers_were_not_candidates(tmp_path: Path) -> None:
    data = anchors(n=300, seed=6)
    labels = data.labels.toarray().astype(bool)
    segments = [f"S{j}" for j in range(labels.shape[1])]

    def build(out: Path, limit: int) -> Any:
        assignment = AssignmentParams(k=10, feature_knn_max_anchors=limit,
                                      scorers=["logistic_regression", "tower_knn", "iv_weighted_knn",
                                               "raw_feature_knn"])
        build_bundle_from_arrays(out, data.embeddings, np.arange(300) + 1, sp.csr_matrix(labels), segments,
                                 data.split, IndexParams(), assignment, features=data.features,
                                 index_version="v", model_version="1", run_date="2026-11-22")
        return load_bundle(out)

    capped = build(tmp_path / "capped", 299)
    assert capped.selection is not None and capped.scorers is not None
    assert capped.selection.scorers == ["logistic_regression", "tower_knn"]
    assert set(capped.selection.excluded_scorers) == {"raw_feature_knn", "iv_weighted_knn"}
    stored = json.loads((tmp_path / "capped" / "selection.json").read_text())
    assert "feature_knn_max_anchors=299" in stored["excluded_scorers"]["iv_weighted_knn"]
    assert capped.scorers.anchor_features is None  # nothing stored for scorers that are not served
    assert not {c.scorer for c in capped.selection.segments} & {"raw_feature_knn", "iv_weighted_knn"}

    # the report says why, next to the per-segment choices
    test = np.flatnonzero(data.split == "test")
    decisions = capped.assign_scores(data.embeddings[test], data.features[test], test).decisions
    metrics = write_evaluation(tmp_path / "report", [MethodResult(SELECTED, segment_metrics(labels[test], decisions,
                                                                                          segments), decisions)],
                               sp.csr_matrix(labels[test]), None, {}, 0.05, 2, {"run_date": "2026-11-22"},
                               capped.selection)
    assert set(metrics["excluded_scorers"]) == {"raw_feature_knn", "iv_weighted_knn"}
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Scorer iv_weighted_knn not a candidate" in report and "feature_knn_max_anchors=299" in report

    uncapped = build(tmp_path / "uncapped", 300)
    assert uncapped.selection is not None
    assert {"raw_feature_knn", "iv_weighted_knn"} <= set(uncapped.selection.scorers)
    assert uncapped.selection.excluded_scorers == {}


def test_prepare_builds_the_request_state_once() -> None:
    data = anchors(n=300, seed=7)
    fitted = fit_scorers(["gradient_boosting", "iv_weighted_knn"], data,
                         ScorerParams(k=10, aggregation="majority", gbm_trees=5))
    chosen = {"gradient_boosting": np.asarray([0, 3, 5]), "iv_weighted_knn": np.asarray([1, 2, 5])}
    fitted.prepare(chosen)
    prepared = dict(fitted._per_columns)
    assert len(prepared) == 2
    for name, columns in chosen.items():
        fitted.score(name, data.embeddings[:3], data.features[:3], columns)
    assert fitted._per_columns.keys() == prepared.keys()
    assert all(fitted._per_columns[key] is value for key, value in prepared.items())
