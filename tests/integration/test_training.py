"""Trainer end to end: real snapshot -> MLflow run -> registered pyfunc -> reloaded encoder;
promotion rules, determinism, the privacy guard against a real Feast registry, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from lookalike.cli import main as cli_main
from lookalike.config import load_config
from lookalike.contract import FeatureContract, FeatureSpec
from lookalike.errors import DataValidationError, PrivacyViolationError
from tests.fixtures.model import REPO_ROOT, SMOKE_OVERRIDES, TrainedModel, train_into
from training.artifact import LookalikeEncoder, load_registered_encoder
from training.config import TrainConfig
from training.data import guard_against_repo, load_snapshot
from training.synthetic import make_synthetic_snapshot, synthetic_contract, synthetic_frame, write_snapshot
from training.train import fit


def smoke_config(snapshot: Path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, REPO_ROOT / "configs" / "training.yaml",
                       [*SMOKE_OVERRIDES, f"snapshot={snapshot}", *extra])


@pytest.fixture(scope="module")
def synthetic_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_snapshot(tmp_path_factory.mktemp("snap") / "snapshot", n=1200, seed=1)


# ------------------------------------------------------------------ real snapshot, registry
@pytest.mark.integration
def test_registered_champion_reloads_with_identical_embeddings(trained_model: TrainedModel) -> None:
    encoder, info = load_registered_encoder(trained_model.tracking_uri, trained_model.model_name, "champion")
    assert info.version == trained_model.model_version
    assert info.run_id == trained_model.run_id
    assert {"candidate", "champion"} <= set(info.aliases)
    snapshot = load_snapshot(trained_model.snapshot_dir, min_customers=1)
    assert info.snapshot_hash == snapshot.content_hash
    assert encoder.contract == snapshot.contract
    assert encoder.segments == snapshot.vocabulary

    reloaded = encoder.embed(snapshot.frame)
    in_memory = trained_model.result.encoder.embed(snapshot.frame)
    assert reloaded.dtype == np.float32 and reloaded.shape == (len(snapshot.frame), encoder.embedding_dim)
    np.testing.assert_array_equal(reloaded, in_memory)
    np.testing.assert_allclose(np.linalg.norm(reloaded, axis=1), 1.0, atol=1e-5)
    # The pyfunc flavour (what a generic MLflow consumer sees) returns the same embeddings.
    mlflow.set_tracking_uri(trained_model.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{trained_model.model_name}/{trained_model.model_version}")
    np.testing.assert_allclose(np.asarray(pyfunc.predict(snapshot.frame.head(50))), reloaded[:50], atol=1e-6)

    splits = encoder.split_of(snapshot.customer_ids)
    assert set(splits) == {"train", "validation", "test"}
    np.testing.assert_array_equal(splits, encoder.split_of(snapshot.customer_ids))
    matrix = encoder.feature_matrix(snapshot.frame)
    assert matrix.dtype == np.float32 and matrix.shape[0] == len(snapshot.frame)
    assert np.isfinite(matrix).all()


@pytest.mark.integration
def test_run_logs_params_metrics_artifacts_and_tags(trained_model: TrainedModel) -> None:
    client = MlflowClient(tracking_uri=trained_model.tracking_uri)
    run = client.get_run(trained_model.run_id)
    assert run.data.params["model.embedding_dim"] == "32"
    assert run.data.params["target"] == "cosine"
    snapshot = load_snapshot(trained_model.snapshot_dir, min_customers=1)
    assert run.data.tags["feature_service"] == snapshot.contract.service_name
    assert run.data.tags["feature_service_version"] == snapshot.contract.service_version
    assert run.data.tags["snapshot_hash"] == snapshot.content_hash
    assert run.data.tags["label_date"] == str(snapshot.manifest["label_date"])
    assert run.data.tags["git_commit"]
    assert run.data.tags["promoted"] == "true"
    history = client.get_metric_history(trained_model.run_id, "val_mae")
    assert [m.step for m in history] == list(range(1, len(history) + 1)) and len(history) >= 1
    for name in ("train_mae", "val_knn_micro_f1", "val_knn_micro_f1_best"):
        assert client.get_metric_history(trained_model.run_id, name)
    assert any(key.startswith("val_mae_bin_") for key in run.data.metrics)
    assert 0.0 <= run.data.metrics["test_mae"] <= 1.0
    assert run.data.metrics["raw_knn_micro_f1_best"] >= 0.0

    local = Path(mlflow.artifacts.download_artifacts(run_id=trained_model.run_id,
                                                      tracking_uri=trained_model.tracking_uri))
    assert (local / "plots" / "spectrogram.png").stat().st_size > 10_000
    assert "embedding_dim: 32" in (local / "config" / "training.yaml").read_text()
    weights = json.loads((local / "sampling" / "bin_weights.json").read_text())
    assert len(weights["weights"]) == 10 and sum(weights["natural_counts"]) == 50_000
    promotion = json.loads((local / "promotion.json").read_text())
    assert promotion["promoted"] is True and promotion["mode"] == "always"
    # Artifacts stayed inside the test's temporary store.
    assert trained_model.artifact_dir.is_dir()


# ------------------------------------------------------------------ promotion rules
UNTRAINED = ["epochs=1", "learning_rate=1.0e-7", "sampling.pairs_per_epoch=256", "model.embedding_dim=2", "seed=99"]

@pytest.mark.integration
def test_promotion_if_better_compares_champion_on_the_candidates_test_pairs(
    synthetic_snapshot: Path, tmp_path: Path
) -> None:
    first = train_into(synthetic_snapshot, tmp_path)
    assert first.promoted and "no champion" in first.promotion_reason
    # An untrained 2-d embedding (one tiny epoch, minuscule learning rate) must not replace it.
    worse = train_into(synthetic_snapshot, tmp_path, UNTRAINED)
    assert not worse.promoted, worse.promotion_reason
    assert f"champion v{first.model_version} kept" in worse.promotion_reason
    client = MlflowClient(tracking_uri=first.tracking_uri)
    name = first.model_name
    assert str(client.get_model_version_by_alias(name, "champion").version) == first.model_version
    assert str(client.get_model_version_by_alias(name, "candidate").version) == worse.model_version
    assert client.get_model_version(name, worse.model_version).tags["promotion"] == worse.promotion_reason

    never = train_into(synthetic_snapshot, tmp_path, [*UNTRAINED, "tracking.promote=never"])
    assert not never.promoted and "promote=never" in never.promotion_reason
    forced = train_into(synthetic_snapshot, tmp_path, [*UNTRAINED, "tracking.promote=always"])
    assert forced.promoted
    assert str(client.get_model_version_by_alias(name, "champion").version) == forced.model_version


@pytest.mark.integration
def test_cli_trains_and_reports_one_line(synthetic_snapshot: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = cli_main(["train", "--snapshot", str(synthetic_snapshot), "--config",
                     str(REPO_ROOT / "configs" / "training.yaml"), *SMOKE_OVERRIDES, "epochs=1",
                     f"tracking.tracking_uri={uri}", f"tracking.artifact_location={tmp_path / 'art'}"])
    assert code == 0
    assert "registered lookalike-two-tower v1" in capsys.readouterr().out
    assert cli_main(["train", "--snapshot", str(tmp_path / "nope"), f"tracking.tracking_uri={uri}"]) == 1
    assert "snapshot directory not found" in capsys.readouterr().err


# ------------------------------------------------------------------ determinism, quality
@pytest.mark.unit
def test_same_seed_gives_identical_weights_and_embeddings(synthetic_snapshot: Path) -> None:
    config = smoke_config(synthetic_snapshot, "epochs=2")
    first, second = fit(config), fit(config)
    for key, value in first.encoder.tower.state_dict().items():
        torch.testing.assert_close(value, second.encoder.tower.state_dict()[key], rtol=0, atol=0)
    frame = first.snapshot.frame
    np.testing.assert_array_equal(first.encoder.embed(frame), second.encoder.embed(frame))
    other = fit(smoke_config(synthetic_snapshot, "epochs=2", "seed=8"))
    assert not np.array_equal(first.encoder.embed(frame), other.encoder.embed(frame))


@pytest.mark.unit
def test_checkpoint_round_trip_preserves_embeddings(synthetic_snapshot: Path, tmp_path: Path) -> None:
    result = fit(smoke_config(synthetic_snapshot, "epochs=1"))
    reloaded = LookalikeEncoder.load(result.encoder.save(tmp_path / "checkpoint.pt"))
    frame = result.snapshot.frame
    np.testing.assert_array_equal(reloaded.embed(frame), result.encoder.embed(frame))
    np.testing.assert_array_equal(reloaded.feature_matrix(frame), result.encoder.feature_matrix(frame))
    assert reloaded.metadata["bin_weights"] == result.bin_weights.tolist()
    assert reloaded.metadata["snapshot_manifest"]["content_hash"] == result.snapshot.content_hash


@pytest.mark.unit
def test_training_learns_more_than_chance(synthetic_snapshot: Path) -> None:
    result = fit(smoke_config(synthetic_snapshot, "epochs=3"))
    first, last = result.history[0], result.history[-1]
    assert last.train_mae < first.train_mae
    # Personas drive segments and features: the embedding kNN must beat a random ranking.
    assert result.best_knn.best > 0.3


PUBLISHED_RECIPE = ("aux_weight=0", "segment_weighting.method=none", "monitor=val_mae",
                    "sampling.natural_fraction=0")


@pytest.mark.unit
def test_published_recipe_stays_reachable_and_default_weights_segments(synthetic_snapshot: Path) -> None:
    published = fit(smoke_config(synthetic_snapshot, "epochs=1", *PUBLISHED_RECIPE))
    assert published.encoder.metadata["segment_weights"] == [1.0] * len(published.encoder.segments)
    assert published.history[0].aux_bce == 0.0
    default = fit(smoke_config(synthetic_snapshot, "epochs=1"))
    weights = np.asarray(default.encoder.metadata["segment_weights"])
    # Predictability weights are data-driven: not all equal, all within [floor, 1].
    assert weights.max() == pytest.approx(1.0) and weights.min() >= 0.05 and weights.std() > 0
    assert default.history[0].aux_bce > 0


# ------------------------------------------------------------------ bad input
def _write(tmp_path: Path, frame: pd.DataFrame, contract: FeatureContract | None = None,
           vocabulary: list[str] | None = None) -> Path:
    base, vocab = synthetic_frame(10)
    return write_snapshot(tmp_path / "bad", frame, contract or synthetic_contract(), vocabulary or vocab)


@pytest.mark.unit
@pytest.mark.parametrize(("mutate", "message"), [
    (lambda f: f.head(0), "0 customer"),
    (lambda f: f.head(20), "training needs at least 50"),
    (lambda f: f.drop(columns=["profile__plan"]), r"missing column\(s\) \['profile__plan'\]"),
    (lambda f: f.assign(web_navigation__nav_sessions_30d=1.0), "not in feature service"),
    (lambda f: f.assign(devices__n_devices=None), "entirely null"),
    (lambda f: f.assign(segments=[["S01", "BOGUS"]] * len(f)), "not in the snapshot's segment_vocabulary"),
    (lambda f: pd.concat([f, f.head(3)]), "duplicate customer_id"),
])
def test_bad_snapshots_are_refused_with_clear_errors(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    frame, _ = synthetic_frame(300, seed=2)
    path = _write(tmp_path, mutate(frame))
    with pytest.raises(DataValidationError, match=message):
        fit(smoke_config(path))


@pytest.mark.unit
def test_manifest_service_and_contract_disagreeing_is_refused(tmp_path: Path) -> None:
    frame, vocab = synthetic_frame(300, seed=2)
    path = write_snapshot(tmp_path / "snap", frame, synthetic_contract(), vocab)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["feature_service_version"] = "2"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataValidationError, match="contract is 'lookalike_legit_v1' v1"):
        load_snapshot(path)
    (path / "data.parquet").write_bytes(b"tampered")
    with pytest.raises(DataValidationError, match="content hash mismatch"):
        load_snapshot(path)


# ------------------------------------------------------------------ privacy guard (real Feast)
MINI_REPO = '''
from datetime import timedelta
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
source = FileSource(path="{data}", timestamp_field="event_timestamp")
profile = FeatureView(
    name="profile", entities=[customer], ttl=timedelta(days=30), source=source,
    schema=[Field(name="age", dtype=Int64, tags={{"encoding": "numeric"}}),
            Field(name="plan", dtype=String, tags={{"encoding": "categorical"}})],
    tags={{"legal_basis": "legitimate_interest"}},
)
web_navigation = FeatureView(
    name="web_navigation", entities=[customer], ttl=timedelta(days=30), source=source,
    schema=[Field(name="nav_sessions_30d", dtype=Float64, tags={{"encoding": "numeric"}})],
    tags={{"legal_basis": "consent"}},
)
legit = FeatureService(name="lookalike_legit_v1", features=[profile], tags={{"version": "1"}})
tampered = FeatureService(name="lookalike_tampered_v1", features=[profile, web_navigation],
                          tags={{"version": "1"}})
'''


@pytest.fixture(scope="module")
def mini_feast_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("feast_repo")
    data = repo / "features.parquet"
    pd.DataFrame({"customer_id": [1, 2], "age": [30, 40], "plan": ["basic", "premium"],
                  "nav_sessions_30d": [1.0, 2.0],
                  "event_timestamp": pd.to_datetime(["2026-11-01", "2026-11-01"], utc=True).as_unit("us")}
                 ).to_parquet(data)
    (repo / "feature_store.yaml").write_text(textwrap.dedent("""\
        project: guardtest
        provider: local
        registry: registry.db
        online_store:
          type: sqlite
          path: online.db
        offline_store:
          type: file
        entity_key_serialization_version: 3
        """))
    (repo / "repo.py").write_text(MINI_REPO.format(data=data))
    feast = Path(sys.executable).with_name("feast")
    done = subprocess.run([str(feast), "apply"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return repo


def _mini_contract(service: str, version: str = "1", with_navigation: bool = False) -> FeatureContract:
    features = [FeatureSpec("profile", "age", "Int64", "numeric"),
                FeatureSpec("profile", "plan", "String", "categorical")]
    if with_navigation:
        features.append(FeatureSpec("web_navigation", "nav_sessions_30d", "Float64", "numeric"))
    return FeatureContract(service, version, tuple(features))


@pytest.mark.integration
def test_guard_accepts_matching_legitimate_interest_service(mini_feast_repo: Path) -> None:
    live = guard_against_repo(mini_feast_repo, _mini_contract("lookalike_legit_v1"))
    assert live.columns == ["profile__age", "profile__plan"]


@pytest.mark.integration
def test_guard_refuses_contract_drift(mini_feast_repo: Path) -> None:
    with pytest.raises(DataValidationError, match="version 2 in snapshot vs 1 in registry"):
        guard_against_repo(mini_feast_repo, _mini_contract("lookalike_legit_v1", version="2"))
    drifted = FeatureContract("lookalike_legit_v1", "1", (FeatureSpec("profile", "age", "Int64", "numeric"),))
    with pytest.raises(DataValidationError, match=r"missing from snapshot \['profile__plan'\]"):
        guard_against_repo(mini_feast_repo, drifted)


@pytest.mark.integration
def test_trainer_refuses_navigation_view_through_the_input_guard(mini_feast_repo: Path, tmp_path: Path) -> None:
    contract = _mini_contract("lookalike_tampered_v1", with_navigation=True)
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({
        "customer_id": np.arange(n, dtype=np.int64),
        "profile__age": rng.integers(18, 80, n),
        "profile__plan": rng.choice(["basic", "premium"], n),
        "web_navigation__nav_sessions_30d": rng.random(n),
        "segments": [["S00"]] * n,
    })
    path = write_snapshot(tmp_path / "snap", frame, contract, ["S00", "S01"])
    with pytest.raises(PrivacyViolationError, match="web_navigation"):
        fit(smoke_config(path, f"repo={mini_feast_repo}"))
