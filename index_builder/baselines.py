"""Baselines the two-tower pipeline is compared against, on the same splits.

Every baseline maps preprocessed legitimate-interest features (``encoder.feature_matrix``)
to per-segment scores in [0, 1]; thresholds are then calibrated on the validation split
exactly like the two-tower pipeline's, so the comparison isolates the representation.

- :class:`RawFeatureKNN`: cosine kNN on the preprocessed features, same k and aggregation.
- :class:`IVWeightedKNN`: per segment, features weighted by their information value
  between the segment's holders (seed) and all anchors (population), then kNN
  (Schibsted's IV-weighted lookalike).
- :class:`KMeansPropagation`: k-means on the training anchors; a customer inherits its
  cluster's segment prevalence (cluster-based cold-start lookalike).
- :class:`PerSegmentLogistic`: one logistic regression per segment.

kNN baselines use all anchors except the query itself (like the pipeline); k-means and
logistic regression are fitted on the training split only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from index_builder import faiss_backend
from index_builder.aggregation import score_neighbours

log = logging.getLogger(__name__)


def _labels(matrix: np.ndarray | sp.spmatrix) -> sp.csr_matrix:
    return sp.csr_matrix(matrix, dtype=np.uint8)


def knn_scores(
    anchor_vectors: np.ndarray,
    anchor_labels: sp.spmatrix,
    query_vectors: np.ndarray,
    query_anchor_rows: np.ndarray | None,
    k: int,
    aggregation: str,
) -> np.ndarray:
    """Exact cosine kNN scores; ``query_anchor_rows`` (row of each query among the anchors)
    excludes the query itself."""
    anchors = faiss_backend.l2_normalise(anchor_vectors)
    queries = faiss_backend.l2_normalise(query_vectors)
    index = faiss_backend.faiss.IndexFlatIP(anchors.shape[1])
    index.add(anchors)
    k = min(k, anchors.shape[0] - (1 if query_anchor_rows is not None else 0))
    if query_anchor_rows is None:
        sims, ids = faiss_backend.search(index, queries, k)
    else:
        sims, ids = faiss_backend.search_excluding_self(index, queries, query_anchor_rows, k)
    return score_neighbours(sims, ids, anchor_labels, aggregation)


@dataclass
class RawFeatureKNN:
    k: int = 10
    aggregation: str = "weighted"
    name: str = "raw_feature_knn"

    def scores(self, anchor_x: np.ndarray, anchor_y: sp.spmatrix, query_x: np.ndarray,
               query_rows: np.ndarray | None) -> np.ndarray:
        return knn_scores(anchor_x, _labels(anchor_y), query_x, query_rows, self.k, self.aggregation)


def information_value(activated: np.ndarray, in_seed: np.ndarray, smoothing: float = 0.5) -> np.ndarray:
    """IV per binary feature between the seed rows and the whole population.

    ``IV_i = (p_i - q_i) * ln(p_i / q_i)`` with ``p_i``/``q_i`` the share of seed/population
    rows where feature ``i`` is active (additively smoothed so absent features stay finite).
    """
    seed = activated[in_seed]
    p = (seed.sum(axis=0) + smoothing) / (len(seed) + 2 * smoothing)
    q = (activated.sum(axis=0) + smoothing) / (len(activated) + 2 * smoothing)
    return ((p - q) * np.log(p / q)).astype(np.float32)


@dataclass
class IVWeightedKNN:
    k: int = 10
    name: str = "iv_weighted_knn"
    min_seed: int = 5

    def scores(self, anchor_x: np.ndarray, anchor_y: sp.spmatrix, query_x: np.ndarray,
               query_rows: np.ndarray | None) -> np.ndarray:
        labels = _labels(anchor_y).tocsc()
        # "activated": above the training mean for z-scored numerics, set for one-hots/flags
        activated = anchor_x > 0
        out = np.zeros((query_x.shape[0], labels.shape[1]), dtype=np.float32)
        for j in range(labels.shape[1]):
            column = labels[:, j].toarray().ravel().astype(bool)
            if column.sum() < self.min_seed:
                out[:, j] = column.mean()
                continue
            weights = information_value(activated, column)
            if not np.any(weights > 0):
                out[:, j] = column.mean()
                continue
            seg_labels = sp.csr_matrix(column[:, None].astype(np.uint8))
            out[:, j] = knn_scores(anchor_x * weights, seg_labels, query_x * weights, query_rows,
                                   self.k, "majority")[:, 0]
        return out


@dataclass
class KMeansPropagation:
    n_clusters: int = 32
    name: str = "kmeans_propagation"
    seed: int = 0

    def scores(self, train_x: np.ndarray, train_y: sp.spmatrix, query_x: np.ndarray) -> np.ndarray:
        import faiss

        data = np.ascontiguousarray(train_x, dtype=np.float32)
        n_clusters = max(1, min(self.n_clusters, len(data) // 10))
        kmeans = faiss.Kmeans(data.shape[1], n_clusters, niter=25, seed=self.seed, verbose=False,
                              min_points_per_centroid=1)
        kmeans.train(data)
        _, train_cluster = kmeans.index.search(data, 1)
        _, query_cluster = kmeans.index.search(np.ascontiguousarray(query_x, dtype=np.float32), 1)
        labels = _labels(train_y).astype(np.float32)
        membership = sp.csr_matrix(
            (np.ones(len(data), dtype=np.float32), (train_cluster.ravel(), np.arange(len(data)))),
            shape=(n_clusters, len(data)),
        )
        sizes = np.maximum(np.asarray(membership.sum(axis=1)).ravel(), 1.0)
        prevalence = np.asarray((membership @ labels).todense()) / sizes[:, None]
        return prevalence[query_cluster.ravel()].astype(np.float32)


@dataclass
class PerSegmentLogistic:
    c: float = 1.0
    name: str = "logistic_regression"
    max_iter: int = 300

    def scores(self, train_x: np.ndarray, train_y: sp.spmatrix, query_x: np.ndarray) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression

        labels = _labels(train_y).toarray().astype(bool)
        out = np.zeros((query_x.shape[0], labels.shape[1]), dtype=np.float32)
        for j in range(labels.shape[1]):
            column = labels[:, j]
            if column.all() or not column.any():
                out[:, j] = float(column.mean())
                continue
            model = LogisticRegression(C=self.c, max_iter=self.max_iter)
            model.fit(train_x, column)
            out[:, j] = model.predict_proba(query_x)[:, 1]
        return out


BASELINE_NAMES: Sequence[str] = (
    "raw_feature_knn", "iv_weighted_knn", "kmeans_propagation", "logistic_regression",
)
