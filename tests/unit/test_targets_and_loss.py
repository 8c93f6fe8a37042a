"""Pair targets (cosine / jaccard / hamming, empty-segment rule) and the loss wrapper."""

from __future__ import annotations

import pytest
import torch

from lookalike.errors import ConfigError
from training.loss import PairObjective, predicted_similarity, similarity_l1
from training.targets import TARGETS, get_target, register_target

pytestmark = pytest.mark.unit

A = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
B = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)


def test_cosine_target() -> None:
    sims = get_target("cosine")(A, B)
    torch.testing.assert_close(sims, torch.tensor([0.5, 1.0, 0.0, 1.0, 0.0]))


def test_jaccard_target() -> None:
    sims = get_target("jaccard")(A, B)
    torch.testing.assert_close(sims, torch.tensor([1 / 3, 1.0, 0.0, 1.0, 0.0]))


def test_hamming_target() -> None:
    sims = get_target("hamming")(A, B)
    torch.testing.assert_close(sims, torch.tensor([0.5, 1.0, 0.75, 1.0, 0.0]))


def test_empty_segment_rule_is_zero_vs_segmented_and_one_vs_empty() -> None:
    empty = torch.zeros(1, 4)
    someone = torch.tensor([[0.0, 1, 0, 0]])
    for name in ("cosine", "jaccard"):
        assert float(TARGETS[name](empty, someone)[0]) == 0.0
        assert float(TARGETS[name](empty, empty)[0]) == 1.0
        assert float(TARGETS[name](someone, empty)[0]) == 0.0


def test_targets_are_symmetric_and_bounded() -> None:
    generator = torch.Generator().manual_seed(0)
    a = (torch.rand(500, 12, generator=generator) < 0.2).float()
    b = (torch.rand(500, 12, generator=generator) < 0.2).float()
    for fn in TARGETS.values():
        sims = fn(a, b)
        torch.testing.assert_close(sims, fn(b, a))
        assert float(sims.min()) >= 0.0 and float(sims.max()) <= 1.0 + 1e-6


def test_registry_is_pluggable_and_unknown_names_fail_clearly() -> None:
    @register_target("overlap_any")
    def overlap_any(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a * b).sum(dim=1) > 0).float()

    try:
        assert get_target("overlap_any")(A, B).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    finally:
        TARGETS.pop("overlap_any")
    with pytest.raises(ConfigError, match="unknown pair target 'nope'"):
        get_target("nope")


def test_l1_loss_is_mean_absolute_error_of_cosine() -> None:
    ea = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), dim=1)
    eb = torch.nn.functional.normalize(torch.tensor([[0.0, 1.0], [1.0, 1.0]]), dim=1)
    target = torch.tensor([0.5, 0.5])
    loss, prediction = similarity_l1(ea, eb, target)
    torch.testing.assert_close(prediction, torch.tensor([0.0, 1.0]))
    assert float(loss) == pytest.approx(0.5)
    torch.testing.assert_close(predicted_similarity(ea, eb), prediction)


def test_objective_adds_weighted_auxiliary_bce_only_when_enabled() -> None:
    ea = torch.nn.functional.normalize(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    target = torch.full((4,), 0.3)
    logits = torch.zeros(8, 5)
    labels = torch.ones(8, 5)
    plain = PairObjective(0.0)(ea, ea, target, logits, labels)
    assert float(plain.auxiliary) == 0.0
    assert float(plain.total) == pytest.approx(0.7, abs=1e-5)
    mixed = PairObjective(0.5)(ea, ea, target, logits, labels)
    assert float(mixed.auxiliary) == pytest.approx(float(torch.log(torch.tensor(2.0))), abs=1e-5)
    assert float(mixed.total) == pytest.approx(0.7 + 0.5 * float(mixed.auxiliary), abs=1e-5)


def test_scaled_labels_give_the_weighted_cosine() -> None:
    import numpy as np

    from training.segment_weights import scale_labels

    a = np.array([[1, 1, 0, 1]], dtype=np.float32)
    b = np.array([[1, 0, 1, 1]], dtype=np.float32)
    w = np.array([1.0, 0.25, 0.5, 0.05])
    expected = (w * a * b).sum() / np.sqrt((w * a).sum() * (w * b).sum())
    sims = get_target("cosine")(torch.from_numpy(scale_labels(a, w)), torch.from_numpy(scale_labels(b, w)))
    assert sims.item() == pytest.approx(expected, rel=1e-5)


def test_predictability_weights_rank_explained_segments_above_noise() -> None:
    import numpy as np

    from training.segment_weights import segment_weights

    rng = np.random.default_rng(0)
    features = rng.normal(size=(2000, 6)).astype(np.float32)
    explained = features[:, 0] + 0.3 * rng.normal(size=2000) > 0.5
    noise = rng.random(2000) < 0.3
    labels = np.c_[explained, noise].astype(np.float32)
    weights = segment_weights(features, labels, "predictability", power=1.0, floor=0.05, seed=1)
    assert weights[0] == pytest.approx(1.0)
    assert weights[1] <= 0.1
    assert segment_weights(features, labels, "none", 1.0, 0.05, 1).tolist() == [1.0, 1.0]


def test_segment_weighting_with_a_non_cosine_target_fails_clearly() -> None:
    from training.config import SegmentWeightingConfig, TrainConfig

    with pytest.raises(ValueError, match="segment_weighting.method=none"):
        TrainConfig(target="jaccard")
    unweighted = SegmentWeightingConfig(method="none")
    assert TrainConfig(target="jaccard", segment_weighting=unweighted).target == "jaccard"
