"""The per-segment selection is replaced only by a single scorer that beats it out of sample."""

from __future__ import annotations

import numpy as np
import pytest

from index_builder.scorers import OutOfSample
from index_builder.selection import select
from index_builder.selection_guard import SELECTED, alone, guard, winner

pytestmark = pytest.mark.unit

SEGMENTS = [f"S{j}" for j in range(6)]


def candidates(n: int = 900, seed: int = 0) -> tuple[dict[str, OutOfSample], np.ndarray]:
    """Logistic regression informative on every segment, LightGBM only on the first three
    (noise elsewhere), out of sample on every row."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, len(SEGMENTS))) < 0.2
    informative = np.clip(0.2 + 0.5 * truth + rng.normal(0, 0.2, truth.shape), 0, 1)
    partial = np.clip(0.2 + 0.5 * truth + rng.normal(0, 0.2, truth.shape), 0, 1)
    partial[:, 3:] = rng.random((n, 3))
    rows = np.arange(n)
    return ({"logistic_regression": OutOfSample(rows, informative.astype(np.float32)),
             "gradient_boosting": OutOfSample(rows, partial.astype(np.float32))}, truth)


def test_winner_needs_a_clear_gain_on_one_metric_and_no_loss_on_the_other() -> None:
    own = {SELECTED: [0.50, 0.40]}
    assert winner({**own, "blend": [0.504, 0.45]}, 0.005) == "blend"  # macro clearly better, micro level
    assert winner({**own, "blend": [0.52, 0.394]}, 0.005) == SELECTED  # micro better, macro worse than the band
    assert winner({**own, "blend": [0.503, 0.403]}, 0.005) == SELECTED  # inside the band on both: a tie
    both = {**own, "blend": [0.52, 0.40], "gradient_boosting": [0.51, 0.42]}
    assert winner(both, 0.005) == "gradient_boosting"  # several: the best micro + macro


def test_guard_keeps_a_selection_that_uses_each_scorer_where_it_is_better() -> None:
    oos, truth = candidates()
    rows = np.arange(len(truth))
    kwargs = {"f1_tolerance": 0.005}
    selection = select(oos, truth, SEGMENTS, prevalence_rows=rows, **kwargs)
    guarded = guard(selection, oos, truth, SEGMENTS, rows, tolerance=0.005, folds=5, seed=0, min_rows=50,
                    select_kwargs=kwargs)
    table = guarded.guard["nested_cv"]
    assert set(table) == {SELECTED, "logistic_regression", "gradient_boosting"}
    assert guarded.guard["chosen"] == winner(table, 0.005)
    # LightGBM alone ships noise scores on half the segments: the selection beats it
    assert table[SELECTED][0] > table["gradient_boosting"][0]
    assert guarded.guard["chosen"] != "gradient_boosting"


def test_guard_is_skipped_on_too_few_anchors() -> None:
    oos, truth = candidates(n=40)
    rows = np.arange(len(truth))
    selection = select(oos, truth, SEGMENTS, prevalence_rows=rows, min_positives=2)
    guarded = guard(selection, oos, truth, SEGMENTS, rows, tolerance=0.005, folds=5, seed=0, min_rows=50,
                    select_kwargs={"min_positives": 2})
    assert "skipped" in guarded.guard and guarded.chosen == selection.chosen


def test_a_scorer_shipped_alone_keeps_its_own_thresholds_and_shipping_rule() -> None:
    oos, truth = candidates(seed=1)
    rows = np.arange(len(truth))
    selection = select(oos, truth, SEGMENTS, prevalence_rows=rows, f1_tolerance=0.005)
    expected_thresholds = selection.thresholds_of("gradient_boosting")
    expected_shipped = selection.shipped_of("gradient_boosting")
    replaced = alone(selection, "gradient_boosting", "test", ship_segments=["S5"])
    assert replaced.chosen == ["gradient_boosting"] * len(SEGMENTS)
    assert np.allclose(replaced.thresholds, expected_thresholds)
    # its noise segments do not beat the prior, except the one the configuration ships anyway
    assert list(replaced.shipped) == [*expected_shipped[:5], True]
    assert not expected_shipped[3:5].any() and expected_shipped[:3].all()
    assert replaced.tradeoff == selection.tradeoff.get("by_scorer", {}).get("gradient_boosting", {})
