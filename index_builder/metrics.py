"""Multi-label classification metrics per segment, and the "recoverable?" verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp


def _dense_bool(matrix: np.ndarray | sp.spmatrix) -> np.ndarray:
    if sp.issparse(matrix):
        return np.asarray(matrix.toarray(), dtype=bool)  # type: ignore[union-attr]
    return np.asarray(matrix).astype(bool)


def prior_f1(prevalence: np.ndarray) -> np.ndarray:
    """F1 of the best label-free rule: predict the segment for everybody (2p / (1 + p))."""
    p = np.asarray(prevalence, dtype=np.float64)
    return np.where(p > 0, 2 * p / (1 + p), 0.0)


@dataclass
class SegmentMetrics:
    per_segment: pd.DataFrame  # segment, support, predicted, tp, fp, fn, precision, recall, f1, prior_f1
    micro_f1: float
    macro_f1: float
    micro_precision: float
    micro_recall: float

    def summary(self) -> dict[str, float]:
        return {"micro_f1": self.micro_f1, "macro_f1": self.macro_f1,
                "micro_precision": self.micro_precision, "micro_recall": self.micro_recall}


def segment_metrics(
    truth: np.ndarray | sp.spmatrix,
    predicted: np.ndarray | sp.spmatrix,
    segments: Sequence[str],
    prevalence: np.ndarray | None = None,
) -> SegmentMetrics:
    """Per-segment precision/recall/F1 and micro/macro F1 (macro over segments with support).

    ``prevalence`` (share of holders among the anchors) gives the prior F1 a label-free rule
    reaches; when omitted, the evaluated customers' own prevalence is used.
    """
    y = _dense_bool(truth)
    p = _dense_bool(predicted)
    tp = (y & p).sum(axis=0).astype(np.float64)
    fp = (~y & p).sum(axis=0).astype(np.float64)
    fn = (y & ~p).sum(axis=0).astype(np.float64)
    support = y.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    if prevalence is None:
        prevalence = y.mean(axis=0) if len(y) else np.zeros(y.shape[1])
    frame = pd.DataFrame({
        "segment": list(segments), "support": support, "predicted": p.sum(axis=0),
        "tp": tp.astype(int), "fp": fp.astype(int), "fn": fn.astype(int),
        "precision": precision, "recall": recall, "f1": f1,
        "prevalence": np.asarray(prevalence, dtype=np.float64),
        "prior_f1": prior_f1(np.asarray(prevalence)),
    })
    total_tp, total_fp, total_fn = tp.sum(), fp.sum(), fn.sum()
    micro_p = total_tp / (total_tp + total_fp) if total_tp + total_fp else 0.0
    micro_r = total_tp / (total_tp + total_fn) if total_tp + total_fn else 0.0
    micro_f1 = 2 * total_tp / (2 * total_tp + total_fp + total_fn) if total_tp + total_fp + total_fn else 0.0
    has_support = support > 0
    macro_f1 = float(f1[has_support].mean()) if has_support.any() else 0.0
    return SegmentMetrics(frame, float(micro_f1), macro_f1, float(micro_p), float(micro_r))


def flag_unrecoverable(per_segment: pd.DataFrame, margin: float = 0.05) -> pd.Series:
    """True where F1 is within ``margin`` of the prior F1: the features carry no signal."""
    return (per_segment["f1"] - per_segment["prior_f1"]) < margin


def confusion_counts(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """2x2 ``[[tn, fp], [fn, tp]]`` for one segment column."""
    y = np.asarray(truth, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    return np.array([[int((~y & ~p).sum()), int((~y & p).sum())],
                     [int((y & ~p).sum()), int((y & p).sum())]])
