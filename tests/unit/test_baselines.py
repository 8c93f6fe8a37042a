from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from index_builder.aggregation import calibrate_thresholds, decide
from index_builder.baselines import (
    IVWeightedKNN,
    KMeansPropagation,
    PerSegmentLogistic,
    RawFeatureKNN,
    information_value,
)
from index_builder.metrics import confusion_counts, flag_unrecoverable, prior_f1, segment_metrics

pytestmark = pytest.mark.unit


def synthetic_base(n: int = 900, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Segment 0 and 1 follow features; segment 2 is noise (like navigation segments)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    y = np.zeros((n, 3), bool)
    y[:, 0] = x[:, 0] + 0.3 * rng.normal(size=n) > 0.8
    y[:, 1] = (x[:, 1] > 0.5) & (x[:, 2] > -0.5)
    y[:, 2] = rng.random(n) < 0.2
    return x, y


def evaluate_scores(scores_val, y_val, scores_test, y_test):  # type: ignore[no-untyped-def]
    cal = calibrate_thresholds(scores_val, y_val)
    return segment_metrics(y_test, decide(scores_test, cal.thresholds), ["a", "b", "nav"])


def test_information_value_ranks_the_seed_feature_first() -> None:
    x, y = synthetic_base()
    iv = information_value(x > 0, y[:, 0])
    assert int(np.argmax(iv)) == 0 and np.all(iv >= 0)


@pytest.mark.parametrize("model", [RawFeatureKNN(k=15), IVWeightedKNN(k=15)])
def test_knn_baselines_recover_feature_segments_not_noise(model) -> None:  # type: ignore[no-untyped-def]
    x, y = synthetic_base()
    labels = sp.csr_matrix(y.astype(np.uint8))
    val, test = np.arange(0, 300), np.arange(300, 600)
    s_val = model.scores(x, labels, x[val], val)
    s_test = model.scores(x, labels, x[test], test)
    metrics = evaluate_scores(s_val, y[val], s_test, y[test])
    f1 = metrics.per_segment.set_index("segment")["f1"]
    assert f1["a"] > 0.6
    flags = flag_unrecoverable(metrics.per_segment).tolist()
    assert flags[0] is False and flags[2] is True


@pytest.mark.parametrize("model", [KMeansPropagation(n_clusters=16), PerSegmentLogistic()])
def test_fitted_baselines_recover_feature_segments_not_noise(model) -> None:  # type: ignore[no-untyped-def]
    x, y = synthetic_base()
    train, val, test = np.arange(300, 900), np.arange(0, 150), np.arange(150, 300)
    s_val = model.scores(x[train], y[train], x[val])
    s_test = model.scores(x[train], y[train], x[test])
    assert s_test.shape == (150, 3) and s_test.min() >= 0 and s_test.max() <= 1
    metrics = evaluate_scores(s_val, y[val], s_test, y[test])
    table = metrics.per_segment.set_index("segment")
    assert table.loc["a", "f1"] > table.loc["a", "prior_f1"] + 0.1
    assert flag_unrecoverable(metrics.per_segment).tolist()[2] is True


def test_metrics_by_hand() -> None:
    truth = np.array([[1, 0], [1, 1], [0, 0], [0, 1]], bool)
    pred = np.array([[1, 0], [0, 1], [1, 0], [0, 0]], bool)
    m = segment_metrics(truth, pred, ["x", "y"])
    row = m.per_segment.set_index("segment")
    assert row.loc["x", "precision"] == 0.5 and row.loc["x", "recall"] == 0.5
    assert row.loc["y", "precision"] == 1.0 and row.loc["y", "recall"] == 0.5
    assert m.micro_f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert m.macro_f1 == pytest.approx((0.5 + 2 / 3) / 2)
    assert confusion_counts(truth[:, 0], pred[:, 0]).tolist() == [[1, 1], [1, 1]]
    assert prior_f1(np.array([0.0, 1.0, 0.2])).tolist() == pytest.approx([0.0, 1.0, 0.4 / 1.2])
