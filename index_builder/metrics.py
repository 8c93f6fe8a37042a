"""Multi-label classification metrics per segment (scikit-learn), and the "recoverable?" verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix, precision_recall_fscore_support


def _to_csr_bool(matrix: np.ndarray | sp.spmatrix) -> sp.csr_matrix:
    """Label indicator matrix as sparse booleans: scikit-learn's multilabel format."""
    if sp.issparse(matrix):
        return sp.csr_matrix(matrix, dtype=bool)
    dense = np.asarray(matrix)
    return sp.csr_matrix(dense.reshape(dense.shape[0], -1).astype(bool))


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
    y = _to_csr_bool(truth)
    p = _to_csr_bool(predicted)
    # Per-segment 2x2 counts, [[tn, fp], [fn, tp]], from scikit-learn (sparse-aware).
    confusion = multilabel_confusion_matrix(y, p) if y.shape[1] else np.zeros((0, 2, 2), dtype=np.int64)
    tp, fp, fn = confusion[:, 1, 1], confusion[:, 0, 1], confusion[:, 1, 0]
    support = tp + fn
    if y.shape[1]:
        precision, recall, f1, _ = precision_recall_fscore_support(y, p, average=None, zero_division=0.0)
        micro_p, micro_r, micro_f1, _ = precision_recall_fscore_support(y, p, average="micro", zero_division=0.0)
    else:
        precision = recall = f1 = np.zeros(0)
        micro_p = micro_r = micro_f1 = 0.0
    if prevalence is None:
        prevalence = support / y.shape[0] if y.shape[0] else np.zeros(y.shape[1])
    frame = pd.DataFrame({
        "segment": list(segments), "support": support, "predicted": tp + fp,
        "tp": tp.astype(int), "fp": fp.astype(int), "fn": fn.astype(int),
        "precision": np.asarray(precision, dtype=np.float64), "recall": np.asarray(recall, dtype=np.float64),
        "f1": np.asarray(f1, dtype=np.float64),
        "prevalence": np.asarray(prevalence, dtype=np.float64),
        "prior_f1": prior_f1(np.asarray(prevalence)),
    })
    # Macro over segments with support: a segment nobody holds in the evaluated set has no F1
    # to speak of (scikit-learn's macro average would count it as 0).
    has_support = support > 0
    macro_f1 = float(np.asarray(f1)[has_support].mean()) if has_support.any() else 0.0
    return SegmentMetrics(frame, float(micro_f1), macro_f1, float(micro_p), float(micro_r))


def flag_unrecoverable(per_segment: pd.DataFrame, margin: float = 0.05) -> pd.Series:
    """True where F1 is within ``margin`` of the prior F1: the features carry no signal."""
    return (per_segment["f1"] - per_segment["prior_f1"]) < margin


def confusion_counts(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """2x2 ``[[tn, fp], [fn, tp]]`` for one segment column."""
    return np.asarray(confusion_matrix(np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool),
                                       labels=[False, True]), dtype=np.int64)
