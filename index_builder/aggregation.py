"""Turning k nearest opt-in anchors into per-segment scores and decisions.

Pure NumPy/SciPy, shared by batch assignment, evaluation and online serving (through the
re-exports in :mod:`index_builder.assign`), so every path computes identical scores.

Aggregations (``sims``/``idx`` are the k neighbours of each query, ``Y`` the anchors'
binary segment matrix):

- ``majority``: share of the k neighbours holding the segment (vote share); with the
  fixed 0.5 threshold this is a majority vote.
- ``mean``: mean over the k neighbours of ``max(sim, 0) * y`` -- the vote share scaled by
  how close the neighbourhood is, so a customer far from every anchor scores low on
  everything instead of inheriting whatever its distant neighbours hold.
- ``weighted``: similarity-weighted frequency ``sum(w * y) / sum(w)``, ``w = max(sim, 0)``;
  closer anchors count more, scores stay in [0, 1] like the vote share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from lookalike.errors import ConfigError, DataValidationError

AGGREGATIONS = ("majority", "mean", "weighted")
THRESHOLD_MODES = ("calibrated", "fixed")
_EPS = 1e-6


def _validate_neighbours(sims: np.ndarray, idx: np.ndarray, n_anchors: int) -> None:
    if sims.shape != idx.shape or sims.ndim != 2:
        raise DataValidationError(
            f"neighbour similarities {sims.shape} and ids {idx.shape} must be equal 2-D shapes"
        )
    if idx.size and int(idx.max()) >= n_anchors:
        raise DataValidationError(
            f"neighbour id {int(idx.max())} out of range for {n_anchors} anchors"
        )


def score_neighbours(
    sims: np.ndarray,
    idx: np.ndarray,
    anchor_segments: sp.spmatrix | np.ndarray,
    method: str = "weighted",
) -> np.ndarray:
    """Per-segment scores in [0, 1], shape ``(n_queries, n_segments)``, float32.

    ``idx`` holds anchor row numbers (``-1`` = no neighbour, as FAISS pads when the index
    has fewer than k vectors; such slots count as absent, not as votes).
    """
    if method not in AGGREGATIONS:
        raise ConfigError(f"aggregation must be one of {AGGREGATIONS}, got {method!r}")
    sims = np.asarray(sims, dtype=np.float32)
    idx = np.asarray(idx, dtype=np.int64)
    labels = sp.csr_matrix(anchor_segments, dtype=np.float32)
    _validate_neighbours(sims, idx, labels.shape[0])
    n, k = idx.shape
    valid = idx >= 0
    if method == "majority":
        weights = valid.astype(np.float32)
        norm = np.maximum(valid.sum(axis=1, keepdims=True), 1).astype(np.float32)
    elif method == "mean":
        weights = np.where(valid, np.clip(sims, 0.0, 1.0), 0.0).astype(np.float32)
        norm = np.maximum(valid.sum(axis=1, keepdims=True), 1).astype(np.float32)
    else:
        weights = np.where(valid, np.clip(sims, 0.0, 1.0) + _EPS, 0.0).astype(np.float32)
        norm = np.maximum(weights.sum(axis=1, keepdims=True), _EPS).astype(np.float32)
    weights = weights / norm
    # sparse (n x n_anchors) weight matrix times the label matrix: one pass, no Python loop.
    # Built as CSR directly (row i = its k slots; absent neighbours weigh 0): going through
    # COO sorted and summed 80M entries on the weekly job, 1.45 s vs 0.98 s per 250k rows.
    index_type = np.int32 if max(labels.shape[0], n * k) < np.iinfo(np.int32).max else np.int64
    mixer = sp.csr_matrix(
        (weights.ravel(), np.where(valid, idx, 0).ravel().astype(index_type),
         np.arange(0, n * k + 1, k, dtype=index_type)),
        shape=(n, labels.shape[0]),
    )
    scores = np.asarray((mixer @ labels).todense(), dtype=np.float32)
    return np.clip(scores, 0.0, 1.0)


def decide(scores: np.ndarray, thresholds: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """Boolean segment membership: ``score >= threshold`` per segment column."""
    scores = np.asarray(scores)
    limits = np.asarray(thresholds, dtype=np.float32)
    if limits.ndim == 1 and limits.shape[0] != scores.shape[1]:
        raise DataValidationError(
            f"{limits.shape[0]} thresholds for {scores.shape[1]} segment columns"
        )
    # a tiny tolerance so a 5/10 vote meets a 0.5 threshold despite float32 rounding
    return scores >= (limits - 1e-6)


@dataclass
class Calibration:
    thresholds: np.ndarray  # float32, one per segment
    validation_f1: np.ndarray  # best F1 per segment on the calibration set (nan = fallback)
    source: list[str]  # "calibrated" | "fallback_low_support" | "fixed" per segment


def best_f1_threshold(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(threshold, f1)`` maximising F1 for one segment over all distinct score cut-offs."""
    truth = np.asarray(truth, dtype=bool)
    positives = int(truth.sum())
    if positives == 0:
        return 1.0, 0.0
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    tp = np.cumsum(truth[order])
    predicted = np.arange(1, len(scores) + 1)
    # a cut-off is only valid at the last position of a run of equal scores
    last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    nonzero = sorted_scores > 0
    candidates = last_of_run & nonzero
    if not candidates.any():
        return 1.0, 0.0
    f1 = 2 * tp / (predicted + positives)
    f1 = np.where(candidates, f1, -1.0)
    best = int(np.argmax(f1))
    return float(sorted_scores[best]), float(f1[best])


def calibrate_thresholds(
    scores: np.ndarray,
    truth: np.ndarray | sp.spmatrix,
    mode: str = "calibrated",
    fixed_threshold: float = 0.5,
    floor: float = 0.2,
    min_positives: int = 5,
) -> Calibration:
    """Per-segment thresholds from held-out opt-in customers.

    ``calibrated`` maximises F1 per segment, never below ``floor`` (a very low cut-off would
    flood a rare segment with lookalikes); segments with fewer than ``min_positives``
    held-out holders keep ``fixed_threshold`` (too few to estimate anything). ``fixed`` uses
    ``fixed_threshold`` everywhere.
    """
    if mode not in THRESHOLD_MODES:
        raise ConfigError(f"threshold mode must be one of {THRESHOLD_MODES}, got {mode!r}")
    dense_truth = np.asarray(
        truth.toarray() if sp.issparse(truth) else truth,  # type: ignore[union-attr]
    ).astype(bool)
    if dense_truth.shape != scores.shape:
        raise DataValidationError(
            f"calibration scores {scores.shape} and labels {dense_truth.shape} differ in shape"
        )
    n_segments = scores.shape[1]
    thresholds = np.full(n_segments, fixed_threshold, dtype=np.float32)
    f1s = np.full(n_segments, np.nan, dtype=np.float32)
    source = ["fixed"] * n_segments
    if mode == "fixed":
        return Calibration(thresholds, f1s, source)
    for j in range(n_segments):
        if dense_truth[:, j].sum() < min_positives:
            source[j] = "fallback_low_support"
            continue
        threshold, f1 = best_f1_threshold(scores[:, j], dense_truth[:, j])
        thresholds[j] = max(threshold, floor)
        f1s[j] = f1
        source[j] = "calibrated"
    return Calibration(thresholds, f1s, source)
