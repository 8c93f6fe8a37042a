"""A small customer base (~480 opt-in, 10 segments) on the hand-written gym repo, through
`lookalike weekly --retrain`: per-segment scorer selection must pick sensibly and the system as
shipped must be at least as good as the best single method on the test split.

Segments are built so that the right scorer is known in advance:
- ``lin_*``: the holding probability is logistic in ONE feature (spend, age, visits), with
  label noise -- a linear model is the correctly specified one (trees and neighbour votes
  fit the noise and must not beat it by more than the noise of the comparison);
- ``clu_*``: parity (XOR) of the corners of eight tight clusters in the visit-share space --
  no hyperplane separates it, a nearest-neighbour vote recovers it;
- ``family``: a boolean feature; ``noise_*``: independent of every feature (must not ship).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
OWN_REPO = REPO_ROOT / "tests" / "data" / "own_repo"
DATES = ("2026-11-15", "2026-11-22")
MEMBERS = 800
LINEAR = ("lin_spend", "lin_age", "lin_visits")
CLUSTERED = ("clu_a", "clu_b", "clu_c", "clu_d")
NOISE = ("noise_a", "noise_b")
KNN_SCORERS = {"tower_knn", "raw_feature_knn", "iv_weighted_knn", "tower_head"}


def _stamp(day: str, n: int) -> pa.Array:
    moment = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    return pa.array([moment] * n, type=pa.timestamp("us", "UTC"))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def write_small_base(out: Path, seed: int = 11) -> None:
    rng = np.random.default_rng(seed)
    n = MEMBERS
    ids = np.arange(50_001, 50_001 + n, dtype=np.int64)
    # eight tight clusters on the corners of a cube in the class/weights/pool share space
    cluster = rng.integers(0, 8, n)
    bits = (cluster[:, None] >> np.arange(3)) & 1
    centres = np.c_[0.15 + 0.7 * ((np.arange(8)[:, None] >> np.arange(3)) & 1), np.full(8, 0.3)]
    shares = np.clip(centres[cluster] + rng.normal(0, 0.04, size=(n, 4)), 0, 1)
    minutes = 40 + 40 * centres[cluster, 0] + rng.normal(0, 2, n)
    visits = rng.poisson(8, n).astype(float)
    age = rng.integers(18, 70, n)
    spend = rng.gamma(2.0, 30.0, n)
    family = rng.random(n) < 0.25
    supplements = rng.beta(2, 3, n)
    z = {name: (v - v.mean()) / v.std() for name, v in (("spend", spend), ("age", age.astype(float)),
                                                        ("visits", visits))}
    held = {
        "lin_spend": rng.random(n) < _sigmoid(3.0 * (z["spend"] - 0.3)),
        "lin_age": rng.random(n) < _sigmoid(3.0 * z["age"]),
        "lin_visits": rng.random(n) < _sigmoid(3.0 * (z["visits"] - 0.5)),
        # parities of corner coordinates: no hyperplane separates them, neighbours do
        "clu_a": (bits[:, 0] ^ bits[:, 1]).astype(bool), "clu_b": (bits[:, 1] ^ bits[:, 2]).astype(bool),
        "clu_c": (bits[:, 0] ^ bits[:, 2]).astype(bool), "clu_d": (bits[:, 0] ^ bits[:, 1] ^ bits[:, 2]).astype(bool),
        "family": family,
        "noise_a": rng.random(n) < 0.3, "noise_b": rng.random(n) < 0.2,
    }
    opt_in = rng.random(n) < 0.6
    for day in DATES:
        ts = {"customer_id": pa.array(ids), "event_timestamp": _stamp(day, n), "created_timestamp": _stamp(day, n)}
        tables = {
            "gym_visits": {"visits_30d": visits, "avg_visit_min_30d": minutes, "share_classes_30d": shares[:, 0],
                           "share_weights_30d": shares[:, 1], "share_pool_30d": shares[:, 2],
                           "share_early_morning_30d": shares[:, 3]},
            "member_profile": {"age": age,
                               "membership_tier": np.array(["basic", "plus", "premium"])[rng.integers(0, 3, n)],
                               "home_club": np.char.add("CLUB", rng.integers(0, 10, n).astype(str)),
                               "has_family_plan": family},
            "shop_purchases": {"spend_90d": spend, "orders_90d": rng.poisson(2, n).astype(float),
                               "share_supplements_90d": supplements, "share_apparel_90d": 1 - supplements},
            "member_consent": {"opt_in": opt_in, "consent_valid_from": pa.array(
                [datetime(2026, 1, 1, tzinfo=timezone.utc)] * n, type=pa.timestamp("us", "UTC"))},
            "objections": {"suppressed": np.zeros(n, bool), "objected_at": pa.array(
                [datetime(2026, 6, 1, tzinfo=timezone.utc)] * n, type=pa.timestamp("us", "UTC"))},
        }
        for name, columns in tables.items():
            (out / name).mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({**ts, **{k: v if isinstance(v, pa.Array) else pa.array(v)
                                               for k, v in columns.items()}}), out / name / f"{day}.parquet")
        keep = np.flatnonzero(opt_in)
        (out / "member_interests").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "customer_id": pa.array(ids[keep]), "event_timestamp": _stamp(day, n).take(pa.array(keep)),
            "created_timestamp": _stamp(day, n).take(pa.array(keep)),
            "interests": pa.array([sorted(s for s, mask in held.items() if mask[i]) for i in keep],
                                  type=pa.list_(pa.string())),
        }), out / "member_interests" / f"{day}.parquet")


def test_small_base_selects_sensibly_and_never_loses_to_a_single_method(tmp_path: Path) -> None:
    from index_builder.bundle import load_bundle
    from index_builder.config import WeeklyConfig
    from index_builder.weekly import run
    from lookalike.config import load_config
    from lookalike.feast_utils import feast_apply
    from tests.fixtures.model import SMOKE_OVERRIDES

    data = tmp_path / "features"
    write_small_base(data)
    repo = tmp_path / "own_repo"
    shutil.copytree(OWN_REPO, repo)
    feast_apply(repo, data_dir=data)
    config = load_config(WeeklyConfig, REPO_ROOT / "configs" / "weekly.yaml", [
        f"repo={repo}", f"date={DATES[-1]}", f"workspace={tmp_path / 'artifacts'}", "retrain=true",
        f"training_config={REPO_ROOT / 'configs' / 'training.yaml'}",
        f"model.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "model.name=small-two-tower",
    ])
    # fold towers on (the default for a base this small; the smoke config turns them off)
    config.training_overrides = [*SMOKE_OVERRIDES, "tracking.promote=always", "min_customers=50",
                                 "tracking.experiment=small", "tower_crossfit.max_customers=3000"]
    result = run(config)
    bundle = load_bundle(result.index_dir)
    assert bundle.selection is not None
    assert 400 <= bundle.manifest["counts"]["anchors"] <= 560
    choice = {c.segment: c for c in bundle.selection.segments}
    chosen = {c.segment: (c.scorer, c.shipped, {k: v.oos_f1 for k, v in c.candidates.items()})
              for c in bundle.selection.segments}
    # calibration used every non-test opt-in customer, not a validation slice, for the tower too
    assert bundle.manifest["counts"]["tower_fold_towers"] == 5
    for scorer in ("logistic_regression", "tower_knn", "tower_head"):
        assert choice["lin_spend"].candidates[scorer].rows == bundle.manifest["counts"]["calibration_customers"]

    # linear-in-one-feature segments: a model of the features (or the blend, which averages the
    # linear model with the others) wins, the linear one at least once, and the linear model
    # beats the tower's kNN vote out of sample
    assert all(choice[s].scorer in {"logistic_regression", "gradient_boosting", "iv_weighted_knn", "raw_feature_knn",
                                    "blend"} for s in LINEAR), chosen
    assert "logistic_regression" in bundle.selection.blend_members
    assert any(choice[s].scorer == "logistic_regression" for s in LINEAR), chosen
    for segment in LINEAR:
        fits = choice[segment].candidates
        assert fits["logistic_regression"].oos_f1 > fits["tower_knn"].oos_f1, chosen
    # clustered segments: a neighbour vote beats the linear model, which is (mostly) not chosen
    for segment in CLUSTERED:
        fits = choice[segment].candidates
        assert max(fits[s].oos_f1 for s in KNN_SCORERS) > fits["logistic_regression"].oos_f1, chosen
    assert sum(choice[s].scorer != "logistic_regression" for s in CLUSTERED) >= 3, chosen
    # independent segments are not shipped, and get no lookalike rows
    assert not any(choice[s].shipped for s in NOISE), chosen
    table = pq.read_table(result.segments_dir / "segments.parquet").to_pandas()
    lookalike = table[table["source"] == "lookalike"]
    assert not set(lookalike["segment"]) & set(NOISE)
    shipped = {c.segment for c in bundle.selection.segments if c.shipped}
    assert set(LINEAR) <= set(lookalike["segment"]) <= shipped, chosen

    metrics = json.loads((result.report_dir / "metrics.json").read_text())
    methods = {m["method"]: m for m in metrics["methods"]}
    singles = {k: v for k, v in methods.items() if k != "selected"}
    assert "gradient_boosting" in singles
    for metric in ("micro_f1", "macro_f1"):
        best = max(singles.values(), key=lambda m: m[metric])
        assert methods["selected"][metric] >= best[metric] - 0.005, (metric, metrics["methods"], chosen)
    assert not metrics["warnings"]
    assert set(metrics["excluded_segments"]) == set(NOISE)
    # segments that need different scorers: the nested comparison keeps the per-segment selection
    guard = metrics["selection_guard"]
    assert guard["chosen"] == "per-segment selection", guard
    assert set(guard["nested_cv"]) >= {"per-segment selection", "logistic_regression", "gradient_boosting", "blend"}
