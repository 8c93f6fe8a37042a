"""Balanced random K-fold assignment, shared by training (fold towers) and the index builder
(cross-fitted scorers) so that both split the same way."""

from __future__ import annotations

import numpy as np


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """Balanced random fold number per row, deterministic for a seed."""
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.arange(n) % max(1, min(folds, n))
    return out
