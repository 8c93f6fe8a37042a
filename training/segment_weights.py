"""Per-segment weights for the pair target: how well legitimate-interest features explain
each segment, estimated on the TRAINING split only.

Segments driven by data the model may not see (web navigation) are noise from the tower's
point of view: a cosine target over all segments rewards fitting that noise and spends
capacity on it. Weighting each segment by its predictability focuses the embedding on
segments its inputs can actually recover, which is what kNN assignment is judged on.

Predictability = Gini (2 * AUC - 1, clipped at 0) of a ridge regression from the
preprocessed feature matrix to the segment, fitted on one half of the training customers
and scored on the other half (cheap: one closed-form solve for all segments at once).
Weighted cosine with weights ``w`` equals plain cosine of the label vectors scaled by
``sqrt(w)``, so the target functions stay unchanged (see :func:`scale_labels`).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

WEIGHTINGS = ("none", "predictability")


def _auc(scores: np.ndarray, truth: np.ndarray) -> float:
    positives = int(truth.sum())
    negatives = len(truth) - positives
    if positives == 0 or negatives == 0:
        return 0.5
    ranks = rankdata(scores)
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def segment_predictability(
    features: np.ndarray, labels: np.ndarray, seed: int, ridge: float = 10.0
) -> np.ndarray:
    """Held-out Gini per segment (0 = features carry no signal, 1 = perfectly separable)."""
    n = features.shape[0]
    order = np.random.default_rng(seed).permutation(n)
    fit_rows, score_rows = order[: n // 2], order[n // 2:]
    x = np.c_[features.astype(np.float64), np.ones(n)]
    y = labels.astype(np.float64)
    xf = x[fit_rows]
    gram = xf.T @ xf + ridge * np.eye(x.shape[1])
    coef = np.linalg.solve(gram, xf.T @ y[fit_rows])
    predicted = x[score_rows] @ coef
    truth = labels[score_rows] > 0.5
    gini = np.array([2 * _auc(predicted[:, j], truth[:, j]) - 1 for j in range(labels.shape[1])])
    return np.clip(np.nan_to_num(gini), 0.0, 1.0)


def segment_weights(
    features: np.ndarray, labels: np.ndarray, method: str, power: float, floor: float, seed: int
) -> np.ndarray:
    """Weights in ``[floor, 1]`` (all ones for ``none``), normalised so the largest is 1."""
    if method not in WEIGHTINGS:
        raise ValueError(f"segment weighting must be one of {WEIGHTINGS}, got {method!r}")
    if method == "none" or labels.shape[1] == 0:
        return np.ones(labels.shape[1])
    gini = segment_predictability(features, labels, seed) ** power
    top = gini.max()
    scaled = gini / top if top > 0 else np.ones_like(gini)
    return np.maximum(scaled, floor)


def scale_labels(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Label vectors whose plain cosine is the ``weights``-weighted cosine of the originals."""
    return (labels * np.sqrt(weights)[None, :]).astype(labels.dtype)
