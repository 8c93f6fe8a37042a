"""The tower's out-of-sample scores on every non-test anchor, from the model's fold towers.

Without fold towers the tower scorers (``tower_knn``, ``tower_head``) are scored out of
sample on the validation split only (:func:`index_builder.scorers.out_of_sample`): ~15% of
the non-test anchors, too few for per-segment thresholds on a small base. When the model
artifact carries fold towers (training/crossfit.py, training/fold_towers.py), every
non-test anchor in fold f is scored by fold tower f, which never trained on it:

- ``tower_knn``: the anchor and the pool (every other non-test anchor, never a test anchor,
  never itself) are embedded by fold tower f; the vote uses the assignment's k and aggregation;
- ``tower_head``: fold tower f's segment head on the anchor's fold-f embedding.

Non-test anchors outside the fold assignment (not in the training snapshot: no tower trained
on them) are scored by the main tower. Test anchors are neither scored nor neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from index_builder import faiss_backend
from index_builder.scorers import AnchorData, OutOfSample, ScorerParams, _knn, _logistic_apply

TOWER_SCORERS = ("tower_knn", "tower_head")
Head = tuple[np.ndarray, np.ndarray]


@dataclass
class FoldEmbeddings:
    """The non-test anchors (``AnchorData.fit_rows`` order) as each fold tower sees them."""

    folds: np.ndarray  # (n_fit,) fold of each non-test anchor; -1: no fold tower held it out
    embeddings: list[np.ndarray]  # per fold tower: (n_fit, dim) float32, L2-normalised
    heads: list[Head | None]  # per fold tower: its segment head, None when it has none

    def __post_init__(self) -> None:
        if len(self.embeddings) != len(self.heads) or any(e.shape[0] != len(self.folds) for e in self.embeddings):
            raise ValueError("fold embeddings must have one (n_fit, dim) matrix and one head per fold tower")


def embed_by_fold(fold_towers: Any, anchor_ids: np.ndarray, frame: pd.DataFrame, split: np.ndarray,
                  n_segments: int, batch_size: int = 16384) -> FoldEmbeddings:
    """Embed the non-test anchors (rows of ``frame``) with every fold tower of a
    :class:`training.fold_towers.FoldTowers`."""
    from index_builder.features import embed_frame

    fit_rows = np.flatnonzero(np.asarray(split) != "test")
    rows = frame.iloc[fit_rows].reset_index(drop=True)
    embeddings, heads = [], []
    for fold, encoder in enumerate(fold_towers.encoders):
        embeddings.append(faiss_backend.l2_normalise(
            embed_frame(encoder, rows, batch_size, desc=f"embed anchors (fold tower {fold})")))
        head = encoder.segment_head_arrays()
        heads.append(head if head is not None and head[0].shape[0] == n_segments else None)
    return FoldEmbeddings(fold_towers.fold_of(np.asarray(anchor_ids)[fit_rows]), embeddings, heads)


def out_of_sample(name: str, data: AnchorData, params: ScorerParams, by_fold: FoldEmbeddings,
                  head: Head | None = None) -> OutOfSample | None:
    """Scores of tower scorer ``name`` on every non-test anchor, each from a tower that did not
    train on it (None: ``tower_head`` without heads)."""
    if name not in TOWER_SCORERS:
        raise ValueError(f"{name} is not a tower scorer {TOWER_SCORERS}")
    fit_rows = data.fit_rows
    pool_labels: sp.csr_matrix = data.labels[fit_rows]
    # fold -1: outside the training snapshot, so the main tower never trained on it either
    spaces = [(-1, data.embeddings[fit_rows], head),
              *((f, e, h) for f, (e, h) in enumerate(zip(by_fold.embeddings, by_fold.heads, strict=True)))]
    positions, scores = [], []
    for fold, embeddings, fold_head in spaces:
        members = np.flatnonzero(by_fold.folds == fold)
        if len(members) == 0:
            continue
        if name == "tower_head":
            if fold_head is None:
                return None
            scores.append(_logistic_apply(embeddings[members], fold_head[0], fold_head[1]))
        else:
            scores.append(_knn(embeddings, pool_labels, embeddings[members], params.k, params.aggregation,
                               members)[0])
        positions.append(members)
    if not positions:
        return None
    order = np.argsort(np.concatenate(positions))
    return OutOfSample(fit_rows[np.concatenate(positions)[order]], np.concatenate(scores)[order])
