"""Drift statistics between two weekly profiles: quiet on resampled data, loud on planted shifts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from index_builder.drift import (
    FAIL,
    NO_REFERENCE,
    PASS,
    WARN,
    DriftConfig,
    DriftThresholds,
    build_report,
    compare_volumes,
    feature_profile,
    profile_run,
    psi,
)

pytestmark = pytest.mark.unit

COLUMNS = ["usage__minutes_30d", "usage__share_sports_30d", "profile__plan", "devices__has_tv"]


def week(n: int, seed: int, minutes_scale: float = 1.0, null_fraction: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    minutes = rng.gamma(2.0, 300.0, n) * minutes_scale
    minutes[rng.random(n) < null_fraction] = np.nan
    return pd.DataFrame({
        "usage__minutes_30d": minutes,
        "usage__share_sports_30d": rng.beta(1, 5, n),
        "profile__plan": pd.Series(rng.choice(["basic", "standard", "premium", "family"], n, p=[.4, .3, .2, .1]),
                                   dtype=object),
        "devices__has_tv": pd.array(rng.random(n) < 0.6, dtype="boolean"),
    })


def profile(frame: pd.DataFrame, run_date: str, seed: int, reference: dict | None = None,
            shift: float = 0.0, volumes: dict | None = None) -> dict:
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(len(frame), 8)) + shift
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    nearest = np.clip(rng.normal(0.8 - shift, 0.05, len(frame)), -1, 1)
    return profile_run(run_date, "3", "svc_v1", frame, COLUMNS, embeddings.astype(np.float32), nearest,
                       volumes or {"S01": {"opt_in": 100, "lookalike": 300}}, reference, DriftConfig())


def test_first_run_has_no_reference() -> None:
    current = profile(week(2000, 1), "2026-11-15", 1)
    assert build_report(None, current, week(2000, 1), DriftConfig()).verdict == NO_REFERENCE


@pytest.mark.parametrize("n", [300, 5000])
def test_resampled_week_passes_at_any_size(n: int) -> None:
    reference = profile(week(n, 1), "2026-11-15", 1)
    frame = week(n, 2)
    report = build_report(reference, profile(frame, "2026-11-22", 2, reference), frame, DriftConfig())
    assert report.verdict == PASS, report.flagged


def test_planted_shift_nulls_and_embedding_drift_fail() -> None:
    reference = profile(week(3000, 1), "2026-11-15", 1)
    frame = week(3000, 2, minutes_scale=3.0, null_fraction=0.3)
    current = profile(frame, "2026-11-22", 2, reference, shift=0.4)
    report = build_report(reference, current, frame, DriftConfig())
    assert report.verdict == FAIL
    by_feature = {r["feature"]: r for r in report.features}
    planted = by_feature["usage__minutes_30d"]
    assert planted["status"] == FAIL and planted["psi"] > 0.25 and planted["null_share"] > 0.25
    assert all(r["status"] == PASS for name, r in by_feature.items() if name != "usage__minutes_30d")
    assert {r["check"]: r["status"] for r in report.embedding} == {
        "embedding mean shift": FAIL, "nearest-anchor cosine PSI": FAIL}


def test_embedding_checks_are_skipped_when_the_model_changed() -> None:
    reference = profile(week(1000, 1), "2026-11-15", 1)
    reference["model_version"] = "2"
    frame = week(1000, 2)
    report = build_report(reference, profile(frame, "2026-11-22", 2, reference, shift=0.5), frame, DriftConfig())
    assert [r["status"] for r in report.embedding] == ["SKIPPED"] and report.verdict == PASS


def test_volume_changes_are_flagged_above_the_minimum_volume() -> None:
    rows = compare_volumes({"S01": {"opt_in": 100, "lookalike": 400}, "S02": {"opt_in": 5, "lookalike": 10}},
                           {"S01": {"opt_in": 110, "lookalike": 90}, "S02": {"opt_in": 1, "lookalike": 29}},
                           DriftThresholds(volume_ratio_fail=3.0))
    by_segment = {r["segment"]: r for r in rows}
    assert by_segment["S01"]["status"] == FAIL and by_segment["S01"]["lookalike_change_pct"] == -77.5
    assert by_segment["S02"]["status"] == PASS  # too small to judge
    default = compare_volumes({"S01": {"lookalike": 400}}, {"S01": {"lookalike": 90}}, DriftThresholds())
    assert default[0]["status"] == WARN  # volumes warn by default, they block only when configured


def test_profiles_pool_rare_values_and_psi_is_zero_on_identical_counts() -> None:
    values = pd.Series(["a"] * 50 + ["b"] * 30 + ["rare"] * 3 + [None] * 2, dtype=object)
    summary = feature_profile(values, min_count=10)
    assert summary["counts"] == {"a": 50, "b": 30, "__other__": 3} and summary["nulls"] == 2
    assert psi(np.array([5, 10, 20]), np.array([5, 10, 20])) == 0.0
