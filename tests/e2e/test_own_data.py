"""The whole pipeline on a second, hand-written Feast repo (tests/data/own_repo/):
snapshot -> train (tiny) -> index -> assign -> report, through `lookalike weekly --retrain`,
with distillation on: once with the repo's privileged view (a teacher is trained and logged,
the student registered) and once with that view removed (the plain model, as before)."""

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
MEMBERS = 600
ARCHETYPES = ("yoga", "strength", "swim", "casual", "family")
SIGNAL_SEGMENTS = ("yoga_regulars", "strength_builders", "swimmers", "supplement_shoppers", "early_birds",
                   "family_members")
NOISE_SEGMENT = "app_article_readers"  # like navigation segments: independent of every feature


def _stamp(day: str) -> pa.Array:
    moment = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    return pa.array([moment] * MEMBERS, type=pa.timestamp("us", "UTC"))


def write_gym_data(out: Path, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    ids = np.arange(10_001, 10_001 + MEMBERS, dtype=np.int64)
    kind = rng.integers(0, len(ARCHETYPES), MEMBERS)
    base = np.zeros((MEMBERS, 4))
    base[np.arange(MEMBERS), np.minimum(kind, 3)] = 1.0
    opt_in = rng.random(MEMBERS) < 0.45
    suppressed = rng.random(MEMBERS) < 0.04
    early = rng.random(MEMBERS) < 0.3
    family = (kind == 4) | (rng.random(MEMBERS) < 0.1)
    supplements = np.clip(0.5 * (kind == 1) + rng.beta(1, 4, MEMBERS), 0, 1)
    noise = rng.random(MEMBERS) < 0.3
    reading_rng = np.random.default_rng(seed + 1)  # its own stream: the other tables stay as they were
    for day in DATES:
        ts = {"customer_id": pa.array(ids), "event_timestamp": _stamp(day), "created_timestamp": _stamp(day)}
        shares = np.clip(base[:, :3] * 0.6 + rng.dirichlet([1, 1, 1], MEMBERS) * 0.4, 0, 1)
        tables = {
            "gym_visits": {
                "visits_30d": rng.poisson(4 + 8 * (kind != 3), MEMBERS).astype(float),
                "avg_visit_min_30d": rng.normal(55 + 20 * (kind == 1), 8, MEMBERS),
                "share_classes_30d": shares[:, 0], "share_weights_30d": shares[:, 1], "share_pool_30d": shares[:, 2],
                "share_early_morning_30d": np.clip(0.6 * early + rng.beta(1, 5, MEMBERS), 0, 1),
            },
            "member_profile": {
                "age": rng.integers(18, 70, MEMBERS),
                "membership_tier": np.array(["basic", "plus", "premium"])[rng.integers(0, 3, MEMBERS)],
                "home_club": np.char.add("CLUB", rng.integers(0, 25, MEMBERS).astype(str)),
                "has_family_plan": family,
            },
            "shop_purchases": {
                "spend_90d": rng.gamma(2, 20 + 40 * supplements), "orders_90d": rng.poisson(2, MEMBERS).astype(float),
                "share_supplements_90d": supplements, "share_apparel_90d": 1 - supplements,
            },
            "member_consent": {"opt_in": opt_in,
                               "consent_valid_from": pa.array([datetime(2026, 1, 1, tzinfo=timezone.utc)] * MEMBERS,
                                                              type=pa.timestamp("us", "UTC"))},
            "objections": {"suppressed": suppressed,
                           "objected_at": pa.array([datetime(2026, 6, 1, tzinfo=timezone.utc)] * MEMBERS,
                                                   type=pa.timestamp("us", "UTC"))},
        }
        shares_now = tables["gym_visits"]
        held = {
            "yoga_regulars": shares_now["share_classes_30d"] > 0.5,
            "strength_builders": shares_now["share_weights_30d"] > 0.5,
            "swimmers": shares_now["share_pool_30d"] > 0.5,
            "supplement_shoppers": supplements > 0.45,
            "early_birds": shares_now["share_early_morning_30d"] > 0.5,
            "family_members": family,
            NOISE_SEGMENT: noise,
        }
        interests = [sorted(s for s, mask in held.items() if mask[i]) for i in range(MEMBERS)]
        for name, columns in tables.items():
            directory = out / name
            directory.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({**ts, **{k: pa.array(v) if not isinstance(v, pa.Array) else v
                                                for k, v in columns.items()}}), directory / f"{day}.parquet")
        keep = np.flatnonzero(opt_in)
        # privileged (consented) reading behaviour: reveals the segment no legit feature explains
        directory = out / "app_reading"
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "customer_id": pa.array(ids[keep]), "event_timestamp": _stamp(day).take(pa.array(keep)),
            "created_timestamp": _stamp(day).take(pa.array(keep)),
            "articles_read_30d": reading_rng.poisson(1 + 9 * noise[keep]).astype(float),
            "share_nutrition_articles_30d": np.clip(0.4 * supplements[keep] + reading_rng.beta(1, 4, len(keep)), 0, 1),
        }), directory / f"{day}.parquet")
        directory = out / "member_interests"
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "customer_id": pa.array(ids[keep]), "event_timestamp": _stamp(day).take(pa.array(keep)),
            "created_timestamp": _stamp(day).take(pa.array(keep)),
            "interests": pa.array([interests[i] for i in keep], type=pa.list_(pa.string())),
        }), directory / f"{day}.parquet")


@pytest.mark.parametrize("privileged_view", [True, False], ids=["with_privileged_view", "without"])
def test_whole_pipeline_on_a_different_repo(tmp_path: Path, privileged_view: bool) -> None:
    from mlflow import MlflowClient

    from index_builder.config import WeeklyConfig
    from index_builder.weekly import run
    from lookalike.config import load_config
    from lookalike.feast_utils import feast_apply
    from tests.fixtures.model import SMOKE_OVERRIDES
    from training.artifact import load_registered_encoder

    data = tmp_path / "features"
    write_gym_data(data)
    repo = tmp_path / "own_repo"
    shutil.copytree(OWN_REPO, repo)
    if not privileged_view:
        (repo / "app_reading.py").unlink()
    feast_apply(repo, data_dir=data)
    workspace = tmp_path / "artifacts"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = load_config(WeeklyConfig, REPO_ROOT / "configs" / "weekly.yaml", [
        f"repo={repo}", f"date={DATES[-1]}", f"workspace={workspace}", "retrain=true",
        f"training_config={REPO_ROOT / 'configs' / 'training.yaml'}", f"model.tracking_uri={tracking}",
        "model.name=gym-two-tower", "assignment.k=8",
    ])
    config.training_overrides = [*SMOKE_OVERRIDES, "tracking.promote=always", "min_customers=50",
                                 "tracking.experiment=gym", "distill.enabled=true", "distill.modes=[similarity]",
                                 "distill.weights=[0.5]"]
    result = run(config)
    assert result.retrained and result.model_version == "1"
    client = MlflowClient(tracking)
    assert [str(v.version) for v in client.search_model_versions("name='gym-two-tower'")] == ["1"]
    student, info = load_registered_encoder(tracking, "gym-two-tower", "1")
    assert not any(c.startswith("app_reading") for c in student.contract.columns)
    tags = client.get_run(info.run_id).data.tags
    if privileged_view:
        assert tags["teacher_inputs"] == "gym_lookalike_v1+app_reading" and tags["teacher_servable"] == "false"
        assert student.metadata["distillation"]["chosen"] in {"none", "similarity@0.5"}
    else:
        assert "teacher_inputs" not in tags and "distillation" not in student.metadata

    table = pq.read_table(result.segments_dir / "segments.parquet").to_pandas()
    assert set(table["segment"]) <= {*SIGNAL_SEGMENTS, NOISE_SEGMENT}
    assert set(table["source"]) == {"opt_in", "lookalike"}
    manifest = json.loads((result.segments_dir / "manifest.json").read_text())
    assert manifest["feature_service"] == "gym_lookalike_v1" and manifest["counts"]["suppressed_customers"] > 0

    bundle_manifest = json.loads((result.index_dir / "manifest.json").read_text())
    assert bundle_manifest["feature_service"] == "gym_lookalike_v1" and bundle_manifest["counts"]["anchors"] > 150

    metrics = json.loads((result.report_dir / "metrics.json").read_text())
    per_segment = {row["segment"]: row for row in metrics["per_segment"]}
    assert set(per_segment) == {*SIGNAL_SEGMENTS, NOISE_SEGMENT}
    assert per_segment[NOISE_SEGMENT]["unrecoverable"]
    recovered = [s for s in SIGNAL_SEGMENTS if not per_segment[s]["unrecoverable"]]
    assert len(recovered) >= 3, per_segment
    assert (result.report_dir / "report.html").is_file() and (result.report_dir / "volume_expansion.png").is_file()
