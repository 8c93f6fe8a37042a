from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from index_builder.aggregation import (
    best_f1_threshold,
    calibrate_thresholds,
    decide,
    score_neighbours,
)
from lookalike.errors import ConfigError, DataValidationError

pytestmark = pytest.mark.unit

# 4 anchors x 3 segments
LABELS = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 1]], dtype=np.uint8))


def test_majority_is_the_vote_share() -> None:
    sims = np.array([[0.9, 0.5, 0.1, 0.1]], np.float32)
    idx = np.array([[0, 1, 2, 3]])
    scores = score_neighbours(sims, idx, LABELS, "majority")
    assert scores.tolist() == [[0.75, 0.5, 0.25]]
    assert decide(scores, 0.5).tolist() == [[True, True, False]]


def test_weighted_favours_closer_anchors() -> None:
    idx = np.array([[0, 2]])
    close_to_0 = score_neighbours(np.array([[0.9, 0.1]], np.float32), idx, LABELS, "weighted")
    close_to_2 = score_neighbours(np.array([[0.1, 0.9]], np.float32), idx, LABELS, "weighted")
    assert close_to_0[0, 0] == pytest.approx(0.9, abs=1e-3) and close_to_0[0, 1] == pytest.approx(0.1, abs=1e-3)
    assert close_to_2[0, 1] > close_to_2[0, 0]
    # equal similarities reduce to the vote share
    even = score_neighbours(np.array([[0.4, 0.4]], np.float32), idx, LABELS, "weighted")
    assert even[0].tolist() == pytest.approx([0.5, 0.5, 0.0], abs=1e-4)


def test_mean_shrinks_scores_of_far_neighbourhoods() -> None:
    idx = np.array([[0, 1], [0, 1]])
    sims = np.array([[0.95, 0.95], [0.2, 0.2]], np.float32)
    scores = score_neighbours(sims, idx, LABELS, "mean")
    assert scores[0, 0] == pytest.approx(0.95) and scores[1, 0] == pytest.approx(0.2)
    # negative similarity never votes
    neg = score_neighbours(np.array([[-0.5, -0.5]], np.float32), idx[:1], LABELS, "mean")
    assert neg.max() == 0.0


def test_padding_ids_do_not_vote() -> None:
    sims = np.array([[0.9, -3.4e38]], np.float32)
    idx = np.array([[3, -1]])
    for method in ("majority", "mean", "weighted"):
        scores = score_neighbours(sims, idx, LABELS, method)
        assert scores[0, 1] == 0.0 and scores[0, 0] > 0.85


def test_scoring_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="aggregation"):
        score_neighbours(np.zeros((1, 1)), np.zeros((1, 1), int), LABELS, "median")
    with pytest.raises(DataValidationError, match="out of range"):
        score_neighbours(np.zeros((1, 1)), np.array([[9]]), LABELS, "majority")
    with pytest.raises(DataValidationError, match="thresholds"):
        decide(np.zeros((2, 3)), [0.5, 0.5])


def test_best_f1_threshold_finds_the_separating_cut() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    truth = np.array([1, 1, 1, 0, 0, 0], bool)
    threshold, f1 = best_f1_threshold(scores, truth)
    assert threshold == pytest.approx(0.7) and f1 == pytest.approx(1.0)
    # ties: a cut-off inside a run of equal scores is not achievable
    threshold, f1 = best_f1_threshold(np.array([0.5, 0.5, 0.5, 0.0]), np.array([1, 0, 0, 0], bool))
    assert threshold == 0.5 and f1 == pytest.approx(0.5)


def test_calibration_floor_and_low_support_fallback() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((200, 3), bool)
    truth[:40, 0] = True  # well separated at a high score
    truth[:60, 1] = True  # best cut would be very low: the floor applies
    truth[:2, 2] = True  # too few holders to calibrate
    scores = np.zeros((200, 3), np.float32)
    scores[:, 0] = np.where(truth[:, 0], 0.8, 0.3) + rng.normal(0, 0.01, 200)
    scores[:, 1] = np.where(truth[:, 1], 0.05, 0.0)
    scores[:, 2] = rng.random(200)
    cal = calibrate_thresholds(scores, sp.csr_matrix(truth), floor=0.2, min_positives=5)
    assert 0.3 < cal.thresholds[0] <= 0.8 and cal.validation_f1[0] == pytest.approx(1.0)
    assert cal.thresholds[1] == pytest.approx(0.2)
    assert cal.thresholds[2] == pytest.approx(0.5) and cal.source[2] == "fallback_low_support"
    fixed = calibrate_thresholds(scores, truth, mode="fixed")
    assert fixed.thresholds.tolist() == [0.5, 0.5, 0.5] and fixed.source == ["fixed"] * 3
    with pytest.raises(DataValidationError):
        calibrate_thresholds(scores[:, :2], truth)
