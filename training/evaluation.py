"""Metrics shared by the training loop, the champion comparison and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from training.sampling import PairBatch, bin_index

F1_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.1, 0.91, 0.05))


@dataclass
class PairMetrics:
    mae: float
    bin_mae: list[float]  # NaN where a bin has no pair
    bin_counts: list[int]
    prediction_hist: list[int]
    target_hist: list[int]


def pair_metrics(prediction: torch.Tensor, target: torch.Tensor, bins: int) -> PairMetrics:
    prediction = prediction.detach().double()
    target = target.detach().double()
    error = (prediction - target).abs()
    target_bin = bin_index(target, bins)
    counts = torch.bincount(target_bin, minlength=bins)
    sums = torch.zeros(bins, dtype=torch.float64).index_add_(0, target_bin, error)
    bin_mae = [float(s / c) if c > 0 else float("nan") for s, c in zip(sums.tolist(), counts.tolist(), strict=True)]
    return PairMetrics(
        mae=float(error.mean()) if error.numel() else float("nan"),
        bin_mae=bin_mae,
        bin_counts=[int(c) for c in counts.tolist()],
        prediction_hist=[int(c) for c in torch.bincount(bin_index(prediction.clamp(0, 1), bins), minlength=bins)],
        target_hist=[int(c) for c in counts.tolist()],
    )


def embedding_pair_metrics(embeddings: np.ndarray, pairs: PairBatch, bins: int) -> PairMetrics:
    emb = torch.from_numpy(embeddings)
    prediction = (emb[pairs.left] * emb[pairs.right]).sum(dim=1)
    return pair_metrics(prediction, pairs.target, bins)


def knn_segment_scores(
    anchors: np.ndarray, anchor_labels: np.ndarray, queries: np.ndarray, k: int, chunk: int = 2048
) -> np.ndarray:
    """Similarity-weighted vote of each query's k nearest anchors (cosine), per segment."""
    a = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(anchors, dtype=np.float32)), dim=1)
    q = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)), dim=1)
    labels = torch.from_numpy(np.ascontiguousarray(anchor_labels, dtype=np.float32))
    k = min(k, a.shape[0])
    scores = np.empty((q.shape[0], labels.shape[1]), dtype=np.float32)
    for start in range(0, q.shape[0], chunk):
        sims, idx = (q[start:start + chunk] @ a.T).topk(k, dim=1)
        weights = sims.clamp_min(0) + 1e-6
        votes = (weights.unsqueeze(2) * labels[idx]).sum(dim=1) / weights.sum(dim=1, keepdim=True)
        scores[start:start + chunk] = votes.numpy()
    return scores


def micro_f1(scores: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    predicted = scores >= threshold
    actual = truth > 0.5
    tp = float(np.logical_and(predicted, actual).sum())
    fp = float(np.logical_and(predicted, ~actual).sum())
    fn = float(np.logical_and(~predicted, actual).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0


@dataclass
class KnnF1:
    at_half: float
    best: float
    best_threshold: float


def knn_micro_f1(
    anchors: np.ndarray, anchor_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray, k: int
) -> KnnF1:
    """The kNN assignment proxy: F1 at threshold 0.5 and at the best global threshold."""
    scores = knn_segment_scores(anchors, anchor_labels, queries, k)
    by_threshold = {t: micro_f1(scores, query_labels, t) for t in F1_THRESHOLDS}
    best_threshold = max(by_threshold, key=lambda t: by_threshold[t])
    return KnnF1(at_half=micro_f1(scores, query_labels, 0.5), best=by_threshold[best_threshold],
                 best_threshold=best_threshold)
