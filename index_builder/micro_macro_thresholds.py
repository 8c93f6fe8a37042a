"""Thresholds for the whole segment set: trade macro-F1 for micro-F1 only within a tolerance.

Per-segment F1-optimal thresholds maximise macro-F1, but on a weak segment the best F1 comes
from flagging many customers: for calibrated scores the F1-optimal cut-off is ``F1_s / 2``, so
a segment whose best F1 is 0.2 flags everyone above 0.1. Every such flag is mostly a false
positive, and summed over the weak segments they cost micro-F1 (20k demo base: 16 segments
with test F1 < 0.25 cost the selected system its micro-F1 lead over LightGBM alone). Micro-F1
is maximised by one cut-off ``F*/2`` across segments instead (``F*`` the achieved micro-F1),
which flags fewer customers on weak segments and more on strong ones. Measured: +0.03 to
+0.05 micro-F1 for every method for at most 0.007 macro-F1 (bench/README.md, "Micro/macro
thresholds and the selection guard").

Both are reported, so the thresholds maximise ``w * micro + (1 - w) * macro`` over the
shipped segments' out-of-sample scores (coordinate ascent over each segment's cut-offs, the
other segments held fixed). The weight ``w`` is chosen by cross-validation on the same
non-test anchors: among the weights whose cross-validated macro-F1 stays within
``macro_tolerance`` of the per-segment thresholds' (``w = 0``), the one with the best
cross-validated micro-F1. ``macro_tolerance = 0`` gives back per-segment F1 thresholds.
Nothing here reads the test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from index_builder.scorers import fold_ids

WEIGHTS = tuple(round(0.05 * i, 2) for i in range(21))
# More distinct cut-offs than this per segment are thinned to evenly spaced ranks (keeping the
# F1-optimal one and the one nearest the start): the ascent costs O(weights x folds x segments
# x cut-offs).
MAX_CUTOFFS = 4096
_EPS = 1e-6


@dataclass
class Tradeoff:
    weight: float  # w in w * micro + (1 - w) * macro
    macro_tolerance: float
    # cross-validated (micro-F1, macro-F1) on the non-test anchors for each weight tried
    cross_validated: dict[str, list[float]] = field(default_factory=dict)
    segments: int = 0  # segments the ascent moved thresholds for


def _cutoffs(scores: np.ndarray, truth: np.ndarray, start: float,
             floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cut-offs, true positives, false positives)`` at the last position of each run of
    equal scores, highest first (thinned to ``MAX_CUTOFFS``, keeping the F1-optimal one and the
    one nearest ``start``)."""
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    tp = np.cumsum(truth[order])
    fp = np.arange(1, len(ranked) + 1) - tp
    valid = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True] & (ranked > 0) & (ranked >= floor - _EPS))
    if len(valid) > MAX_CUTOFFS:
        best_f1 = valid[np.argmax(tp[valid] / (truth.sum() + tp[valid] + fp[valid]))]
        start_at = valid[np.argmin(np.abs(ranked[valid] - start))]
        valid = np.union1d(valid[np.linspace(0, len(valid) - 1, MAX_CUTOFFS).astype(np.int64)], [best_f1, start_at])
    return ranked[valid], tp[valid], fp[valid]


@dataclass
class _Grid:
    """Every active segment's candidate cut-offs with their counts, computed once per row set."""

    positives: np.ndarray  # holders per segment
    cutoffs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]  # segment -> (cut-off, tp, fp)


def _grid(scores: np.ndarray, truth: np.ndarray, start: np.ndarray, active: np.ndarray, floor: float) -> _Grid:
    positives = truth.sum(axis=0)
    cutoffs = {}
    for j in np.flatnonzero(active & (positives > 0)):
        cut, tp, fp = _cutoffs(scores[:, j], truth[:, j], float(start[j]), floor)
        if len(cut):
            cutoffs[int(j)] = (cut, tp, fp)
    return _Grid(positives, cutoffs)


def _ascend(grid: _Grid, start: np.ndarray, weight: float, passes: int = 5) -> np.ndarray:
    """Coordinate ascent of ``weight * micro + (1 - weight) * macro`` from ``start``."""
    thresholds = np.asarray(start, dtype=np.float64).copy()
    if not grid.cutoffs:
        return thresholds
    positives, cutoffs = grid.positives, grid.cutoffs
    current = {j: int(np.argmin(np.abs(cut - start[j]))) for j, (cut, _, _) in cutoffs.items()}
    segments = len(cutoffs)
    total_tp = sum(int(tp[current[j]]) for j, (_, tp, _) in cutoffs.items())
    total_fp = sum(int(fp[current[j]]) for j, (_, _, fp) in cutoffs.items())
    total_pos = int(sum(positives[j] for j in cutoffs))
    f1 = {j: 2 * tp / (positives[j] + tp + fp) for j, (_, tp, fp) in cutoffs.items()}
    macro_sum = float(sum(f1[j][current[j]] for j in cutoffs))
    for _ in range(passes):
        moved = False
        for j, (_, tp, fp) in cutoffs.items():
            i = current[j]
            rest_tp, rest_fp, rest_macro = total_tp - tp[i], total_fp - fp[i], macro_sum - f1[j][i]
            micro = 2 * (rest_tp + tp) / (rest_tp + tp + rest_fp + fp + total_pos)
            objective = weight * micro + (1 - weight) * (rest_macro + f1[j]) / segments
            best = int(np.argmax(objective))
            if objective[best] > objective[i] + 1e-12:
                moved = True
                current[j] = best
                total_tp, total_fp, macro_sum = rest_tp + tp[best], rest_fp + fp[best], rest_macro + f1[j][best]
        if not moved:
            break
    for j, (cut, _, _) in cutoffs.items():
        thresholds[j] = cut[current[j]]
    return thresholds


def fit_thresholds(scores: np.ndarray, truth: np.ndarray, start: np.ndarray, active: np.ndarray, weight: float,
                   floor: float = 0.0) -> np.ndarray:
    """Thresholds maximising ``weight * micro + (1 - weight) * macro`` over ``active`` segments.

    ``scores``/``truth`` are ``(rows, segments)``; ``start`` the per-segment F1 thresholds (the
    ascent starts there and inactive segments keep them). Inactive segments count as flagging
    nobody; macro averages over the active segments with holders. ``weight = 0`` gives each
    segment its own F1-optimal cut-off.
    """
    truth = np.asarray(truth, dtype=bool)
    start = np.asarray(start, dtype=np.float64)
    return _ascend(_grid(scores, truth, start, np.asarray(active, dtype=bool), floor), start, weight)


def micro_macro(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(micro-F1, macro-F1 over segments with holders)`` of boolean ``(rows, segments)`` decisions."""
    tp = (predicted & truth).sum(axis=0)
    wrong = (predicted != truth).sum(axis=0)
    micro = 2 * tp.sum() / max(2 * tp.sum() + wrong.sum(), 1)
    holders = truth.any(axis=0)
    f1 = 2 * tp / np.maximum(2 * tp + wrong, 1)
    return float(micro), float(f1[holders].mean()) if holders.any() else 0.0


def choose(scores: np.ndarray, truth: np.ndarray, start: np.ndarray, active: np.ndarray, *,
           macro_tolerance: float, folds: int = 5, seed: int = 0, floor: float = 0.0,
           weights: Sequence[float] = WEIGHTS) -> tuple[np.ndarray, Tradeoff]:
    """``(thresholds on all rows, the trade-off)``: the weight with the best cross-validated
    micro-F1 among those whose cross-validated macro-F1 is within ``macro_tolerance`` of the
    per-segment F1 thresholds' (smallest weight on ties), then thresholds fitted on every row."""
    truth = np.asarray(truth, dtype=bool)
    active = np.asarray(active, dtype=bool)
    start = np.asarray(start, dtype=np.float64)
    if macro_tolerance <= 0 or not active.any() or len(truth) < 2 * folds:
        return start.copy(), Tradeoff(0.0, macro_tolerance)
    fold = fold_ids(len(truth), folds, seed)
    # per fold: the other folds' cut-offs and their per-segment F1 thresholds (the w = 0 start)
    trained = []
    for f in np.unique(fold):
        held = fold == f
        grid = _grid(scores[~held], truth[~held], start, active, floor)
        trained.append((held, grid, _ascend(grid, start, 0.0)))
    table: dict[str, list[float]] = {}
    for weight in sorted(set(weights) | {0.0}):
        predicted = np.zeros(truth.shape, dtype=bool)
        for held, grid, own in trained:
            cut = _ascend(grid, own, weight) if weight > 0 else own
            predicted[held] = (scores[held] >= cut - _EPS) & active
        table[f"{weight:.2f}"] = [round(v, 6) for v in micro_macro(predicted, truth)]
    floor_macro = table["0.00"][1] - macro_tolerance
    allowed = [(float(w), micro) for w, (micro, macro) in table.items() if macro >= floor_macro - 1e-12]
    weight = max(allowed, key=lambda item: (item[1], -item[0]))[0]
    thresholds = fit_thresholds(scores, truth, start, active, weight, floor) if weight > 0 else start.copy()
    moved = int((np.abs(thresholds - start) > _EPS)[active].sum())
    return thresholds, Tradeoff(weight, macro_tolerance, table, moved)
