"""Fairness audit statistics: skew the lookalike model added, and proxies of a protected attribute."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lookalike.fairness_audit import AuditConfig, composition_skew, group_labels, proxy_scores, segment_skew

pytestmark = pytest.mark.unit


def population(n: int, seed: int) -> tuple[pd.Index, pd.Series]:
    rng = np.random.default_rng(seed)
    ids = pd.Index(np.arange(n), name="customer_id")
    return ids, pd.Series(rng.choice(["F", "M"], n), index=ids)


def test_skew_is_zero_for_a_random_selection_and_large_for_a_one_sided_one() -> None:
    _, gender = population(4000, 0)
    rng = np.random.default_rng(1)
    random_pick = rng.random(4000) < 0.1
    one_sided = (gender.to_numpy() == "F") & (rng.random(4000) < 0.2)
    assert composition_skew(random_pick, gender.to_numpy(), 30)[0] < 0.02
    skew, by_group = composition_skew(one_sided, gender.to_numpy(), 30)
    assert skew > 0.4 and by_group["M"]["rate"] == 0.0


def test_added_skew_flags_the_lookalike_side_only() -> None:
    ids, gender = population(6000, 2)
    rng = np.random.default_rng(3)
    opt_in_ids, lookalike_ids = ids[:2000], ids[2000:]
    women = gender.to_numpy() == "F"
    fair = rng.random(6000) < 0.15
    membership = {
        "opt_in": pd.DataFrame({"S01": fair[:2000], "S02": fair[:2000] & women[:2000] | (rng.random(2000) < 0.02)},
                               index=opt_in_ids),
        # S01: the model assigns it to women only (skew it added); S02: as skewed as its opt-in truth
        "lookalike": pd.DataFrame({"S01": fair[2000:] & women[2000:], "S02": fair[2000:] & women[2000:]
                                   | (rng.random(4000) < 0.02)}, index=lookalike_ids),
    }
    rows = {r["segment"]: r for r in segment_skew(membership, {"gender": gender}, AuditConfig())}
    assert rows["S01"]["flagged"] and rows["S01"]["added_skew"] > 0.3
    assert not rows["S02"]["flagged"] and abs(rows["S02"]["added_skew"]) < 0.05


def test_proxy_scores_flag_a_planted_proxy_numeric_and_categorical() -> None:
    ids, gender = population(3000, 4)
    rng = np.random.default_rng(5)
    inputs = pd.DataFrame({
        "noise": rng.normal(size=3000),
        "bandwidth": np.where(gender == "F", 400.0, 100.0) * rng.lognormal(0, 0.2, 3000),
        "router": pd.Series(np.where(rng.random(3000) < 0.9, gender.map({"F": "r1", "M": "r2"}),
                                     "r3"), dtype=object).to_numpy(),
        "region": pd.Series([f"R{i}" for i in rng.integers(0, 300, 3000)], dtype=object).to_numpy(),
    }, index=ids)
    rows = {r["input"]: r for r in proxy_scores(inputs, {"gender": gender}, AuditConfig())}
    assert rows["bandwidth"]["flagged"] and rows["bandwidth"]["auc"] > 0.95
    assert rows["router"]["flagged"] and rows["router"]["auc"] > 0.9
    # a random high-cardinality column must not look like a proxy (target encoding is out of fold)
    assert not rows["noise"]["flagged"] and not rows["region"]["flagged"] and rows["region"]["auc"] < 0.6


def test_group_labels_band_numbers_and_pool_rare_values() -> None:
    ages = pd.Series([20, 25, 30, 40, 50, 60, 70, 80, np.nan, 35], dtype="float64")
    bands = group_labels(ages, 5, 8)
    assert bands.iloc[8] == "missing" and bands.nunique() == 6
    regions = pd.Series(["a"] * 5 + ["b"] * 4 + ["c", "d", "e"], dtype=object)
    assert set(group_labels(regions, 5, 3)) == {"a", "b", "other"}
