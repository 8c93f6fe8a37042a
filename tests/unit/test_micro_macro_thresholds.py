"""Shipped thresholds trade macro-F1 for micro-F1 only within the tolerance, and it pays off out of sample."""

from __future__ import annotations

import numpy as np
import pytest

from index_builder.aggregation import best_f1_threshold
from index_builder.evaluate import tradeoff_sentence
from index_builder.micro_macro_thresholds import choose, fit_thresholds
from index_builder.scorers import OutOfSample
from index_builder.selection import Selection, select

pytestmark = pytest.mark.unit


def scored_segments(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and truth for 3 strong segments (well separated) and 5 weak ones (a faint signal
    at 10% prevalence, where the best F1 comes from flagging many customers)."""
    rng = np.random.default_rng(seed)
    strong = rng.random((n, 3)) < 0.25
    weak = rng.random((n, 5)) < 0.1
    truth = np.hstack([strong, weak])
    scores = np.hstack([
        np.clip(0.2 + 0.5 * strong + rng.normal(0, 0.15, (n, 3)), 0.001, 1),
        np.clip(0.3 + 0.08 * weak + rng.normal(0, 0.1, (n, 5)), 0.001, 1),
    ]).astype(np.float32)
    return scores, truth


def micro_macro(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = (predicted & truth).sum(0)
    wrong = (predicted != truth).sum(0)
    return 2 * tp.sum() / (2 * tp.sum() + wrong.sum()), float(np.mean(2 * tp / (2 * tp + wrong)))


def own_thresholds(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.array([best_f1_threshold(scores[:, j], truth[:, j])[0] for j in range(truth.shape[1])])


def test_weight_zero_is_each_segments_own_f1_threshold() -> None:
    scores, truth = scored_segments(1500, 0)
    own = own_thresholds(scores, truth)
    active = np.ones(truth.shape[1], dtype=bool)
    fitted = fit_thresholds(scores, truth, np.full(truth.shape[1], 0.5), active, 0.0)
    f1 = [best_f1_threshold(scores[:, j], truth[:, j])[1] for j in range(truth.shape[1])]
    # the same F1 as each segment's own best cut-off (equal-F1 cut-offs may differ)
    assert np.allclose([micro_macro(scores[:, [j]] >= fitted[j], truth[:, [j]])[0] for j in range(len(f1))], f1)
    # inactive segments keep their starting threshold
    active[2] = False
    assert fit_thresholds(scores, truth, own + 0.01, active, 1.0)[2] == pytest.approx(own[2] + 0.01)


def test_trade_raises_weak_segments_thresholds_and_wins_micro_f1_on_fresh_customers() -> None:
    scores, truth = scored_segments(3000, 1)
    own = own_thresholds(scores, truth)
    active = np.ones(truth.shape[1], dtype=bool)
    thresholds, tradeoff = choose(scores, truth, own, active, macro_tolerance=0.02)
    assert tradeoff.weight > 0
    assert (thresholds[3:] > own[3:]).all(), "weak segments must flag fewer customers"
    # the contract: cross-validated macro-F1 gives up at most the tolerance
    table = tradeoff.cross_validated
    assert table[f"{tradeoff.weight:.2f}"][1] >= table["0.00"][1] - 0.02
    assert table[f"{tradeoff.weight:.2f}"][0] > table["0.00"][0]
    # and it holds on customers none of the thresholds saw
    fresh_scores, fresh_truth = scored_segments(20000, 2)
    micro_own, macro_own = micro_macro(fresh_scores >= own, fresh_truth)
    micro_new, macro_new = micro_macro(fresh_scores >= thresholds, fresh_truth)
    assert micro_new > micro_own + 0.04
    assert macro_new >= macro_own - 0.02


def test_zero_tolerance_keeps_per_segment_thresholds() -> None:
    scores, truth = scored_segments(1000, 3)
    own = own_thresholds(scores, truth)
    thresholds, tradeoff = choose(scores, truth, own, np.ones(truth.shape[1], bool), macro_tolerance=0.0)
    assert np.array_equal(thresholds, own) and tradeoff.weight == 0.0


def test_selection_stores_both_thresholds_and_the_tradeoff() -> None:
    scores, truth = scored_segments(1200, 4)
    rows = np.arange(len(truth))
    oos = {"logistic_regression": OutOfSample(rows, scores)}
    names = [f"S{j}" for j in range(truth.shape[1])]
    plain = select(oos, truth, names, f1_tolerance=0.0)
    traded = select(oos, truth, names, f1_tolerance=0.02)
    assert plain.tradeoff == {} and all(c.f1_threshold == c.threshold for c in plain.segments)
    assert traded.tradeoff["weight"] > 0
    assert [c.f1_threshold for c in traded.segments] == [c.threshold for c in plain.segments]
    assert any(c.threshold != c.f1_threshold for c in traded.segments if c.shipped)
    # scorer choice and shipping do not depend on the trade-off
    assert traded.chosen == plain.chosen and (traded.shipped == plain.shipped).all()
    again = Selection.from_json(traded.to_json())
    assert again.tradeoff == traded.tradeoff and np.array_equal(again.thresholds, traded.thresholds)
    # the report says what the trade did
    assert tradeoff_sentence(plain) == ""
    assert f"maximise {traded.tradeoff['weight']:.2f} x micro-F1" in tradeoff_sentence(traded)
    # a selection stored before the trade-off existed still loads
    old = traded.to_json()
    old.pop("tradeoff")
    for segment in old["segments"]:
        segment.pop("f1_threshold")
    assert Selection.from_json(old).tradeoff == {}
