"""Bin-balanced on-the-fly pair sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.sampling import (
    BalancedPairSampler,
    bin_index,
    bin_weights_from_counts,
    fixed_pairs,
    natural_bin_counts,
    random_pairs,
)
from training.synthetic import synthetic_frame
from training.targets import cosine_target

pytestmark = pytest.mark.unit


def labels(n: int = 3000) -> torch.Tensor:
    from training.data import segments_to_matrix

    frame, vocabulary = synthetic_frame(n, seed=3)
    return torch.from_numpy(segments_to_matrix(frame["segments"], vocabulary))


def test_bin_index_edges() -> None:
    sims = torch.tensor([0.0, 0.05, 0.1, 0.99, 1.0])
    assert bin_index(sims, 10).tolist() == [0, 0, 1, 9, 9]


def test_random_pairs_never_pair_a_customer_with_itself() -> None:
    left, right = random_pairs(5, 10_000, torch.Generator().manual_seed(0))
    assert bool((left != right).all())
    assert int(left.max()) < 5 and int(right.max()) < 5


def test_weights_are_inverse_frequency_and_zero_for_empty_bins() -> None:
    weights = bin_weights_from_counts(np.array([80.0, 0.0, 20.0]))
    assert weights[1] == 0
    assert weights[0] * 80 == pytest.approx(weights[2] * 20)
    assert weights[weights > 0].mean() == pytest.approx(1.0)


def test_balanced_batches_cover_occupied_bins_uniformly() -> None:
    y = labels()
    generator = torch.Generator().manual_seed(1)
    counts = natural_bin_counts(y, cosine_target, 200_000, 10, generator)
    natural_share = counts / counts.sum()
    assert natural_share[0] > 0.5  # most random pairs share nothing: the imbalance to correct
    sampler = BalancedPairSampler(y, cosine_target, bin_weights_from_counts(counts), batch_size=1024,
                                  pool_factor=16, natural_fraction=0.0, generator=generator)
    drawn = torch.zeros(10)
    for _ in range(40):
        batch = sampler.sample()
        torch.testing.assert_close(batch.target, cosine_target(y[batch.left], y[batch.right]))
        drawn += torch.bincount(bin_index(batch.target, 10), minlength=10).float()
    share = (drawn / drawn.sum()).numpy()
    occupied = counts > 0
    # Uniform over occupied bins within +-40% relative (pool-limited for the rarest bins).
    expected = 1.0 / occupied.sum()
    assert np.all(np.abs(share[occupied] - expected) < 0.4 * expected), share
    assert share[0] < natural_share[0] / 2


def test_sampling_cost_does_not_grow_with_n_squared() -> None:
    # 400k customers: all pairs would be 8e10; a batch only touches the candidate pool.
    y = torch.zeros(400_000, 20)
    y[torch.arange(400_000), torch.arange(400_000) % 20] = 1
    sampler = BalancedPairSampler(y, cosine_target, np.array([1.0] * 9 + [1.0]), batch_size=512,
                                  pool_factor=4, natural_fraction=0.0, generator=torch.Generator().manual_seed(0))
    batch = sampler.sample()
    assert batch.left.shape == (512,) and batch.target.shape == (512,)


def test_natural_fraction_keeps_part_of_the_batch_unweighted() -> None:
    y = labels(500)
    weights = np.zeros(10)
    weights[9] = 1.0  # balanced part may only draw from the top bin
    sampler = BalancedPairSampler(y, cosine_target, weights, batch_size=1000, pool_factor=8,
                                  natural_fraction=0.5, generator=torch.Generator().manual_seed(0))
    batch = sampler.sample()
    top = bin_index(batch.target, 10) == 9
    assert int(top[:500].sum()) == 500
    assert int(top[500:].sum()) < 250


def test_fixed_evaluation_pairs_keep_the_natural_distribution() -> None:
    y = labels()
    pairs = fixed_pairs(y, cosine_target, 20_000, torch.Generator().manual_seed(0))
    counts = natural_bin_counts(y, cosine_target, 20_000, 10, torch.Generator().manual_seed(5))
    share = torch.bincount(bin_index(pairs.target, 10), minlength=10).numpy() / 20_000
    assert share[0] == pytest.approx(counts[0] / counts.sum(), abs=0.02)
