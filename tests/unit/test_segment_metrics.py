"""index_builder.metrics takes its counts and F1 from scikit-learn; these tests pin the
results to the closed-form definitions the project used before (identical, not close)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from index_builder.metrics import confusion_counts, segment_metrics


def closed_form(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray | float]:
    tp = (y & p).sum(axis=0).astype(np.float64)
    fp = (~y & p).sum(axis=0).astype(np.float64)
    fn = (y & ~p).sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    T, F, N = tp.sum(), fp.sum(), fn.sum()
    support = y.sum(axis=0)
    return {
        "tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1,
        "micro_f1": 2 * T / (2 * T + F + N) if T + F + N else 0.0,
        "micro_precision": T / (T + F) if T + F else 0.0,
        "micro_recall": T / (T + N) if T + N else 0.0,
        "macro_f1": float(f1[support > 0].mean()) if (support > 0).any() else 0.0,
    }


@pytest.mark.unit
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sklearn_metrics_equal_the_closed_form(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random((500, 12)) < rng.uniform(0.01, 0.4, 12)
    p = rng.random((500, 12)) < rng.uniform(0.0, 0.5, 12)
    y[:, 3] = False  # no support: excluded from macro-F1
    p[:, 5] = False  # never predicted: precision 0 by convention, not NaN
    expected = closed_form(y, p)
    for truth, predicted in ((y, p), (sp.csr_matrix(y), sp.csr_matrix(p))):
        got = segment_metrics(truth, predicted, [f"S{i}" for i in range(12)])
        frame = got.per_segment
        for column in ("tp", "fp", "fn", "precision", "recall", "f1"):
            np.testing.assert_array_equal(frame[column].to_numpy(dtype=np.float64), expected[column])
        assert got.micro_f1 == pytest.approx(expected["micro_f1"], rel=1e-15, abs=0)
        assert got.micro_precision == pytest.approx(expected["micro_precision"], rel=1e-15, abs=0)
        assert got.micro_recall == pytest.approx(expected["micro_recall"], rel=1e-15, abs=0)
        assert got.macro_f1 == pytest.approx(expected["macro_f1"], rel=1e-15, abs=0)
        assert frame["support"].tolist() == y.sum(axis=0).tolist()
        assert frame["predicted"].tolist() == p.sum(axis=0).tolist()
        np.testing.assert_allclose(frame["prevalence"], y.mean(axis=0))


@pytest.mark.unit
def test_nothing_predicted_anywhere_gives_zeros_not_nan() -> None:
    y = np.array([[1, 0], [0, 1]], dtype=bool)
    got = segment_metrics(y, np.zeros_like(y), ["a", "b"])
    assert got.micro_f1 == 0.0 and got.macro_f1 == 0.0 and got.micro_precision == 0.0
    assert got.per_segment["precision"].tolist() == [0.0, 0.0]


@pytest.mark.unit
def test_confusion_counts_for_one_segment() -> None:
    truth = np.array([1, 1, 0, 0, 1], dtype=bool)
    predicted = np.array([1, 0, 1, 0, 1], dtype=bool)
    assert confusion_counts(truth, predicted).tolist() == [[1, 1], [1, 2]]
    assert confusion_counts(np.ones(3, bool), np.ones(3, bool)).tolist() == [[0, 0], [0, 3]]
