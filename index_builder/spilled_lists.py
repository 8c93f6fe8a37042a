"""Bulk k-NN for millions of queries: one BLAS search per IVF list over spilled lists.

FAISS answers an IVF search query by query: each query reads the lists it probes and
scores them one vector at a time. On the weekly job (2M customers, 1M anchors, k = 40,
2 cores) that measured ~13 ns per scored anchor and ~100 s for the search
(``bench/README.md``, issue #11). Matrix products are ~15x cheaper per score, but only
when many queries share the same candidates.

Here every anchor is stored in the ``spill`` inverted lists whose centroids are nearest
to it, not only in the nearest one. Queries are grouped by their nearest centroid, and
each group is answered by one exact ``faiss.knn`` (a matrix product plus a heap) against
its list: a list is read once per group instead of once per query, and no per-list
results need merging. Spilling anchors plays the part of probing lists: a neighbour of
query ``q`` is found when ``q``'s centroid is among the neighbour's ``spill`` nearest. So
``spill`` is the recall knob (``spill = nlist`` is exact search), tuned by the index
builder's recall guarantee like ``nprobe``.

Each list is ordered by closeness to its centroid, so a query's heap fills with good
candidates first and later ones are mostly rejected by a single comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

# the scorer groups are too small below this many queries for the matrix products to pay
BULK_FROM = 20_000


@dataclass(frozen=True)
class SpilledLists:
    """Anchors stored in their ``spill`` nearest inverted lists, each list contiguous."""

    centroids: np.ndarray  # (lists, dim): only lists that hold anchors
    bounds: np.ndarray  # (lists + 1,): list i is slots bounds[i]:bounds[i + 1]
    rows: np.ndarray  # (slots,) anchor row of each slot
    anchors: np.ndarray  # (anchors, dim), not copied per slot (see search)
    spill: int

    @property
    def mean_list_length(self) -> float:
        """Anchors one query scores (its group's list), averaged over lists: what a search costs."""
        return float(self.rows.size) / max(1, len(self.centroids))

    def search(self, queries: np.ndarray, k: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (inner products, anchor rows) for each query; ``-1`` pads short lists."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = queries.shape[0]
        sims = np.full((n, k), -np.inf, dtype=np.float32)
        ids = np.full((n, k), -1, dtype=np.int64)
        if n == 0:
            return sims, ids
        _, nearest = faiss.knn(queries, self.centroids, 1, metric=faiss.METRIC_INNER_PRODUCT)
        order = np.argsort(nearest[:, 0], kind="stable")
        group_bounds = np.searchsorted(nearest[order, 0], np.arange(len(self.centroids) + 1))
        groups: Any = np.flatnonzero(np.diff(group_bounds))
        if progress and len(groups) > 1:
            from tqdm import tqdm

            groups = tqdm(groups, desc="bulk search", unit="list", mininterval=2.0)
        for group in groups:
            members = order[group_bounds[group]:group_bounds[group + 1]]
            rows = self.rows[self.bounds[group]:self.bounds[group + 1]]
            # gathered per list into a short-lived buffer: materialising every slot's vector
            # once (spill x the anchors, 1 GB at 1M) cost 2.7 s, mostly first-touch page faults
            found_sims, found = faiss.knn(queries[members], self.anchors[rows], k, metric=faiss.METRIC_INNER_PRODUCT)
            valid = found >= 0
            sims[members] = np.where(valid, found_sims, -np.inf)
            ids[members] = np.where(valid, rows[np.maximum(found, 0)], -1)
        return sims, ids


def spill_lists(vectors: np.ndarray, centroids: np.ndarray, spill: int) -> SpilledLists:
    """Store each row of ``vectors`` in its ``spill`` nearest lists (by inner product)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    spill = max(1, min(int(spill), len(centroids)))
    closeness, lists = faiss.knn(vectors, centroids, spill, metric=faiss.METRIC_INNER_PRODUCT)
    # one sort orders slots by list, then by closeness to the list's centroid (cosines lie in [-1, 1])
    order = np.argsort(lists.ravel() * 4.0 + (1.0 - closeness.ravel()), kind="stable")
    slot_lists = lists.ravel()[order]
    bounds = np.searchsorted(slot_lists, np.arange(len(centroids) + 1))
    held = np.diff(bounds) > 0
    rows = (order // spill).astype(np.int64)
    return SpilledLists(
        centroids=centroids[held], bounds=np.concatenate([[0], np.cumsum(np.diff(bounds)[held])]),
        rows=rows, anchors=vectors, spill=spill,
    )


def ivf_centroids(index: Any) -> np.ndarray:
    """The coarse centroids of an IVF index (flat or graph quantizer)."""
    ivf = faiss.extract_index_ivf(index)
    return np.asarray(ivf.quantizer.reconstruct_n(0, ivf.nlist), dtype=np.float32)
