"""MLflow side of training: params, per-epoch metrics, artifacts, registration, promotion."""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import yaml
from mlflow import MlflowClient
from mlflow.data.pandas_dataset import from_pandas
from mlflow.exceptions import MlflowException

from lookalike.artifacts import git_commit, utc_now, write_json
from lookalike.config import config_to_dict, flatten
from lookalike.mlflow_store import ensure_experiment
from lookalike.settings import CANDIDATE_ALIAS, CHAMPION_ALIAS
from lookalike.uri_outputs import child, is_uri
from training.artifact import CHECKPOINT_NAME, EncoderPyfunc, load_registered_encoder
from training.config import TrainConfig
from training.crossfit import fit_fold_towers, wants_fold_towers
from training.data import SEGMENTS_COLUMN, Snapshot
from training.distill import fit_for_run, log_distillation
from training.evaluation import embedding_pair_metrics
from training.fold_towers import save_fold_towers
from training.model_card import CardFacts, input_example, model_card, model_signature, version_description
from training.sampling import n_bins
from training.spectrogram import plot_spectrogram
from training.train import EpochRecord, FitResult, TrainResult, load_checked_snapshot

log = logging.getLogger(__name__)
PIP_REQUIREMENTS = ["torch", "numpy", "pandas", "pyarrow", "mlflow", "lookalike"]
MODEL_CARD = "model_card.md"


def _other_views(repo: Path | None, contract_views: list[str]) -> dict[str, tuple[str, str]]:
    """Registry views that are not model inputs, with their legal basis and role (card)."""
    if repo is None:
        return {}
    from lookalike.feast_utils import open_store

    others: dict[str, tuple[str, str]] = {}
    for view in open_store(repo).list_feature_views():
        if view.name not in contract_views:
            tags = view.tags or {}
            role = tags.get("lookalike_role")
            others[view.name] = (tags.get("legal_basis", "untagged"),
                                 f"not a model input ({role})" if role else "not a model input")
    return others


def snapshot_dataset(snapshot: Snapshot) -> Any:
    """The training snapshot as an MLflow dataset: source path, schema, row count, content hash."""
    manifest = snapshot.manifest
    name = f"{snapshot.contract.service_name}_v{snapshot.contract.service_version}@{manifest.get('label_date', '')}"
    # MLflow keeps at most 36 characters of digest; the full hash is a run tag.
    source = (child(snapshot.path, "data.parquet") if is_uri(snapshot.path)
              else str(Path(snapshot.path).resolve() / "data.parquet"))
    return from_pandas(snapshot.frame, source=source,
                                   name=name, targets=SEGMENTS_COLUMN, digest=snapshot.content_hash[:32])


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


def _champion_decision(
    client: MlflowClient, config: TrainConfig, result: FitResult, test_mae: float
) -> tuple[bool, dict[str, Any]]:
    mode = config.tracking.promote
    name = config.tracking.model_name
    decision: dict[str, Any] = {"mode": mode, "candidate_test_mae": test_mae, "decided_at": utc_now()}
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        champion = None
    if champion is not None:
        decision["champion_version"] = str(champion.version)
    if mode == "never":
        return False, {**decision, "reason": "promotion disabled (promote=never)"}
    if mode == "always":
        return True, {**decision, "reason": "promoted on request (promote=always)"}
    if champion is None:
        return True, {**decision, "reason": "no champion yet: promoted"}
    encoder, info = load_registered_encoder(config.tracking.tracking_uri, name, str(champion.version))
    contract = result.snapshot.contract
    if (info.feature_service, info.feature_service_version) != (contract.service_name, contract.service_version):
        return False, {**decision, "reason": (
            f"champion v{champion.version} uses feature service {info.feature_service} v"
            f"{info.feature_service_version}, candidate {contract.service_name} v{contract.service_version}: "
            "not comparable, champion kept (use promote=always to switch)")}
    bins = n_bins(config.sampling.bin_width)
    champion_mae = embedding_pair_metrics(encoder.embed(result.test_split.frame), result.test_pairs, bins).mae
    decision["champion_test_mae_on_candidate_pairs"] = champion_mae
    if test_mae <= champion_mae:
        return True, {**decision, "reason": (
            f"promoted: test MAE {test_mae:.4f} <= champion v{champion.version} {champion_mae:.4f} on the same pairs")}
    return False, {**decision, "reason": (
        f"champion v{champion.version} kept: its test MAE {champion_mae:.4f} beats candidate {test_mae:.4f}")}


def track_training(config: TrainConfig) -> TrainResult:
    tracking = config.tracking
    # Bad input and privacy violations fail before an MLflow run is opened.
    snapshot = load_checked_snapshot(config)
    mlflow.set_tracking_uri(tracking.tracking_uri)
    mlflow.set_registry_uri(tracking.tracking_uri)
    client = MlflowClient(tracking_uri=tracking.tracking_uri, registry_uri=tracking.tracking_uri)
    exp_id = ensure_experiment(client, tracking.experiment, tracking.tracking_uri, tracking.artifact_location)
    resolved = config_to_dict(config)
    other_views = _other_views(config.repo, snapshot.contract.views)

    with mlflow.start_run(experiment_id=exp_id, run_name=tracking.run_name) as active, \
            tempfile.TemporaryDirectory(prefix="lookalike-train-") as scratch_name:
        run_id = active.info.run_id
        scratch = Path(scratch_name)
        mlflow.log_params({k: ("None" if v is None else str(v))[:500] for k, v in flatten(resolved).items()})
        mlflow.log_text(yaml.safe_dump(resolved, sort_keys=True), "config/training.yaml")
        mlflow.set_tag("git_commit", git_commit())
        mlflow.log_input(snapshot_dataset(snapshot), context="training")

        def on_epoch(record: EpochRecord) -> None:
            mlflow.log_metrics(_finite(record.metrics()), step=record.epoch)

        result, distilled = fit_for_run(config, snapshot, on_epoch)
        if distilled is not None:  # the teacher stays a run artifact: never registered, never served
            log_distillation(distilled, scratch, run_id)
        fold_towers = None
        if wants_fold_towers(config, result):
            if distilled is not None:
                # fold towers would be plain students, not the model served: the index builder
                # then keeps the validation split for the tower's out-of-sample scores
                log.warning("distillation ran: no fold towers (their scores would not be the served model's)")
            else:
                started = time.process_time()
                fold_towers = fit_fold_towers(config, snapshot, result.best_epoch)
                result.timings["fold_towers_cpu_s"] = time.process_time() - started
        contract = snapshot.contract
        tags = {
            "feature_service": contract.service_name,
            "feature_service_version": contract.service_version,
            "snapshot_hash": snapshot.content_hash,
            "snapshot_path": str(snapshot.path),
            "label_date": str(snapshot.manifest.get("label_date", "")),
            "target": config.target,
        }
        mlflow.set_tags(tags)
        test_mae = result.test.mae
        final = {
            "test_mae": test_mae,
            "best_val_mae": result.val.mae,
            "best_epoch": result.best_epoch,
            "best_val_knn_micro_f1": result.best_knn.at_half,
            "best_val_knn_micro_f1_best": result.best_knn.best,
            "raw_knn_micro_f1": result.raw_knn.at_half,
            "raw_knn_micro_f1_best": result.raw_knn.best,
            "train_customers": result.split_sizes["train"],
            "validation_customers": result.split_sizes["validation"],
            "test_customers": result.split_sizes["test"],
            **{f"test_mae_bin_{i}": v for i, v in enumerate(result.test.bin_mae)},
            **{f"timing_{k}": v for k, v in result.timings.items()},
        }
        mlflow.log_metrics(_finite(final))
        edges = np.linspace(0, 1, len(result.bin_weights) + 1).round(6).tolist()
        bin_payload = {"bin_edges": edges, "natural_counts": result.natural_counts.tolist(),
                       "weights": result.bin_weights.tolist(), "target": config.target}
        mlflow.log_dict(bin_payload, "sampling/bin_weights.json")
        mlflow.log_artifact(str(plot_spectrogram(result.history, scratch / "spectrogram.png")), "plots")

        checkpoint = result.encoder.save(scratch / "model" / CHECKPOINT_NAME)
        manifest_path = scratch / "model" / "manifest.json"
        write_json(manifest_path, {
            "kind": "lookalike_model", "created_at": utc_now(), "run_id": run_id, "git_commit": git_commit(),
            "feature_service": contract.service_name, "feature_service_version": contract.service_version,
            "contract": contract.to_dict(), "segment_vocabulary": snapshot.vocabulary,
            "embedding_dim": result.encoder.embedding_dim, "snapshot_hash": snapshot.content_hash,
            "label_date": snapshot.manifest.get("label_date"), "test_mae": test_mae,
            "best_epoch": result.best_epoch,
        })
        model_artifacts = {"checkpoint": str(checkpoint), "manifest": str(manifest_path)}
        if fold_towers is not None:
            model_artifacts["fold_towers"] = str(save_fold_towers(fold_towers, checkpoint.parent))
        model_version: str | None = None
        model_uri: str | None = None
        promoted = False
        decision: dict[str, Any] = {"reason": "not registered (tracking.register=false)"}
        if tracking.register:
            logged = mlflow.pyfunc.log_model(
                name="model", python_model=EncoderPyfunc(),
                artifacts=model_artifacts,
                registered_model_name=tracking.model_name, pip_requirements=PIP_REQUIREMENTS,
                signature=model_signature(contract, result.encoder.embedding_dim),
                input_example=input_example(result.encoder),
            )
            model_version = str(logged.registered_model_version)
            model_uri = f"models:/{tracking.model_name}/{model_version}"
            for key, value in {**tags, "run_id": run_id, "test_mae": f"{test_mae:.6f}"}.items():
                client.set_model_version_tag(tracking.model_name, model_version, key, value)
            client.set_registered_model_alias(tracking.model_name, CANDIDATE_ALIAS, model_version)
            promoted, decision = _champion_decision(client, config, result, test_mae)
            decision["candidate_version"] = model_version
            if promoted:
                client.set_registered_model_alias(tracking.model_name, CHAMPION_ALIAS, model_version)
            client.set_model_version_tag(tracking.model_name, model_version, "promotion", decision["reason"])
        mlflow.set_tag("promotion", decision["reason"])
        mlflow.set_tag("promoted", str(promoted).lower())
        mlflow.log_text(json.dumps({**decision, "promoted": promoted}, indent=2, default=str), "promotion.json")
        facts = CardFacts(
            model_name=tracking.model_name, model_version=model_version, run_id=run_id, contract=contract,
            snapshot_path=str(snapshot.path), snapshot_hash=snapshot.content_hash,
            snapshot_manifest=snapshot.manifest, split_sizes=result.split_sizes, segments=snapshot.vocabulary,
            segment_weights=None if config.segment_weighting.method == "none"
            else result.encoder.metadata["segment_weights"],
            weight_floor=None if config.segment_weighting.method == "none" else config.segment_weighting.floor,
            metrics={"test_mae": test_mae, "val_mae": result.val.mae, "val_knn_micro_f1": result.best_knn.best,
                     "raw_knn_micro_f1": result.raw_knn.best},
            embedding_dim=result.encoder.embedding_dim, promotion_reason=str(decision["reason"]),
            other_views=other_views,
        )
        mlflow.log_text(model_card(facts), MODEL_CARD)
        if model_version is not None:
            client.update_model_version(tracking.model_name, model_version, description=version_description(facts))
            client.set_model_version_tag(tracking.model_name, model_version, "model_card",
                                         f"runs:/{run_id}/{MODEL_CARD}")
        log.info("run %s: test MAE %.4f; %s", run_id, test_mae, decision["reason"])

    return TrainResult(
        run_id=run_id, model_name=tracking.model_name, model_version=model_version, promoted=promoted,
        promotion_reason=str(decision["reason"]), test_mae=test_mae, val_mae=result.val.mae,
        best_epoch=result.best_epoch, val_knn_micro_f1=result.best_knn.best,
        raw_knn_micro_f1=result.raw_knn.best, tracking_uri=tracking.tracking_uri, model_uri=model_uri,
        encoder=result.encoder,
    )
