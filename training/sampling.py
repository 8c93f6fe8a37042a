"""On-the-fly pair sampling, re-weighted toward uniform coverage of similarity bins.

Pairs are never materialised: each batch draws a candidate pool of random index pairs,
computes their targets from the label matrix, and importance-resamples the pool by the
weight of each pair's similarity bin. Bin weights are estimated once from the natural
distribution of random pairs (stored with the run and in the checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from training.targets import TargetFn


def n_bins(bin_width: float) -> int:
    return int(round(1.0 / bin_width))


def bin_index(similarity: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin of each similarity in [0, 1]; 1.0 falls into the last bin."""
    return torch.clamp((similarity * bins).floor().long(), 0, bins - 1)


def random_pairs(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` random pairs of distinct indices in ``[0, n)``."""
    left = torch.randint(0, n, (size,), generator=generator)
    # Offset in [1, n) guarantees right != left without rejection.
    right = (left + torch.randint(1, n, (size,), generator=generator)) % n
    return left, right


def natural_bin_counts(
    labels: torch.Tensor, target_fn: TargetFn, n_pairs: int, bins: int, generator: torch.Generator,
    chunk: int = 50_000,
) -> np.ndarray:
    counts = torch.zeros(bins, dtype=torch.float64)
    remaining = n_pairs
    while remaining > 0:
        size = min(chunk, remaining)
        left, right = random_pairs(labels.shape[0], size, generator)
        sims = target_fn(labels[left], labels[right])
        counts += torch.bincount(bin_index(sims, bins), minlength=bins).double()
        remaining -= size
    return counts.numpy()


def bin_weights_from_counts(counts: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights, normalised to mean 1 over the bins that occur (0 elsewhere)."""
    weights = np.zeros_like(counts, dtype=np.float64)
    seen = counts > 0
    weights[seen] = 1.0 / counts[seen]
    if seen.any():
        weights[seen] *= seen.sum() / weights[seen].sum()
    return weights


@dataclass
class PairBatch:
    left: torch.Tensor
    right: torch.Tensor
    target: torch.Tensor


class BalancedPairSampler:
    """Draws bin-balanced pair batches among the rows of ``labels`` (training customers)."""

    def __init__(
        self, labels: torch.Tensor, target_fn: TargetFn, bin_weights: np.ndarray, batch_size: int,
        pool_factor: int, natural_fraction: float, generator: torch.Generator,
    ) -> None:
        if labels.shape[0] < 2:
            raise ValueError("pair sampling needs at least two customers")
        self.labels = labels
        self.target_fn = target_fn
        self.weights = torch.as_tensor(bin_weights, dtype=torch.float64)
        self.bins = len(bin_weights)
        self.batch_size = batch_size
        self.pool_size = max(batch_size, batch_size * pool_factor)
        self.n_natural = int(round(batch_size * natural_fraction))
        self.generator = generator

    def sample(self) -> PairBatch:
        n = self.labels.shape[0]
        left, right = random_pairs(n, self.pool_size, self.generator)
        target = self.target_fn(self.labels[left], self.labels[right])
        pool_weights = self.weights[bin_index(target, self.bins)]
        n_balanced = self.batch_size - self.n_natural
        chosen = []
        if n_balanced > 0:
            if float(pool_weights.sum()) <= 0:
                pool_weights = torch.ones_like(pool_weights)
            chosen.append(torch.multinomial(pool_weights, n_balanced, replacement=True, generator=self.generator))
        if self.n_natural > 0:
            chosen.append(torch.randint(0, self.pool_size, (self.n_natural,), generator=self.generator))
        pick = torch.cat(chosen)
        return PairBatch(left=left[pick], right=right[pick], target=target[pick])


def fixed_pairs(
    labels: torch.Tensor, target_fn: TargetFn, n_pairs: int, generator: torch.Generator
) -> PairBatch:
    """Evaluation pairs at the natural (unbalanced) distribution, drawn once."""
    left, right = random_pairs(labels.shape[0], n_pairs, generator)
    return PairBatch(left=left, right=right, target=target_fn(labels[left], labels[right]))
