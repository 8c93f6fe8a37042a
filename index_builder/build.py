"""``lookalike build-index``: embed opt-in anchors and write the FAISS index bundle.

Anchors are opt-in customers with valid consent and a labels row at the run date. Their
legitimate-interest features (point-in-time, through the privacy guard) are embedded by
the registered encoder, indexed for cosine search, and per-segment thresholds are
calibrated on the encoder's validation split (each validation anchor queried against the
index without itself). The bundle is written atomically to
``<output_root>/<date>-m<model_version>/`` and logged to MLflow.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from index_builder import faiss_backend
from index_builder.aggregation import calibrate_thresholds, score_neighbours
from index_builder.bundle import AssignmentSpec, set_current, write_bundle
from index_builder.config import AssignmentParams, BuildConfig
from lookalike.config import config_to_dict, flatten, load_config
from lookalike.errors import DataValidationError

log = logging.getLogger(__name__)


def index_version(run_date: str, model_version: str) -> str:
    return f"{run_date}-m{model_version}"


@dataclass
class Calibrated:
    spec: AssignmentSpec
    customers: int


def calibrate(
    built: faiss_backend.BuiltIndex,
    embeddings: np.ndarray,
    labels: sp.csr_matrix,
    calibration_rows: np.ndarray,
    segments: list[str],
    params: AssignmentParams,
) -> Calibrated:
    """Per-segment thresholds from anchors in ``calibration_rows`` queried without themselves."""
    k = min(params.k, built.ntotal - 1)
    if k < 1:
        raise DataValidationError(f"need at least 2 anchors to assign segments, found {built.ntotal}")
    if len(calibration_rows) and params.threshold_mode == "calibrated":
        queries = faiss_backend.l2_normalise(embeddings[calibration_rows])
        sims, ids = faiss_backend.search_excluding_self(built.searcher(), queries, calibration_rows, k)
        scores = score_neighbours(sims, ids, labels, params.aggregation)
        truth = labels[calibration_rows]
        mode = params.threshold_mode
    else:
        if params.threshold_mode == "calibrated":
            log.warning("no validation anchors to calibrate on; using the fixed threshold %.2f",
                        params.fixed_threshold)
        scores = np.zeros((0, len(segments)), np.float32)
        truth = sp.csr_matrix((0, len(segments)))
        mode = "fixed"
    cal = calibrate_thresholds(scores, truth, mode, params.fixed_threshold, params.threshold_floor,
                               params.min_positives)
    spec = AssignmentSpec(
        k=k, aggregation=params.aggregation, segments=list(segments),
        thresholds=[round(float(t), 6) for t in cal.thresholds], threshold_mode=params.threshold_mode,
        threshold_source=cal.source,
        validation_f1=[None if np.isnan(f) else round(float(f), 6) for f in cal.validation_f1],
        search_params=dict(built.params), fixed_threshold=params.fixed_threshold,
        threshold_floor=params.threshold_floor, min_positives=params.min_positives,
    )
    return Calibrated(spec, int(len(calibration_rows)))


def build_bundle_from_arrays(
    out_dir: Path,
    embeddings: np.ndarray,
    anchor_ids: np.ndarray,
    labels: sp.csr_matrix,
    segments: list[str],
    calibration_rows: np.ndarray,
    index_params: faiss_backend.IndexParams,
    assignment: AssignmentParams,
    **manifest_fields: Any,
) -> dict[str, Any]:
    """Index + calibration + atomic bundle write from in-memory anchors; returns the manifest."""
    built = faiss_backend.build_index(embeddings, index_params, recall_k=assignment.k)
    calibrated = calibrate(built, faiss_backend.l2_normalise(embeddings), labels, calibration_rows,
                           segments, assignment)
    counts = dict(manifest_fields.pop("counts", {}))
    counts.update({"anchors": int(len(anchor_ids)), "segments": len(segments),
                   "calibration_customers": calibrated.customers})
    return write_bundle(out_dir, built, anchor_ids, labels, calibrated.spec, counts=counts, **manifest_fields)


@dataclass
class AnchorSet:
    """Everything the index and the evaluation need about the anchors at a date."""

    ids: np.ndarray
    labels: sp.csr_matrix
    frame: Any  # pandas frame of contract columns (same row order as ids)
    embeddings: np.ndarray
    split: np.ndarray
    dropped_without_features: int


def collect_anchors(store: Any, population: Any, encoder: Any, batch_size: int) -> AnchorSet:
    from index_builder.features import embed_frame, point_in_time_features

    rows = np.flatnonzero(population.anchor_mask)
    ids = population.customer_ids[rows]
    frame, found = point_in_time_features(store, population.contract, ids, population.as_of)
    if (~found).any():
        log.warning("%d opt-in anchor(s) have no legitimate-interest features in the TTL window; "
                    "left out of the index", int((~found).sum()))
    rows, ids, frame = rows[found], ids[found], frame[found].reset_index(drop=True)
    if len(ids) < 2:
        raise DataValidationError(
            f"only {len(ids)} opt-in anchor(s) with labels and features at {population.as_of.date()}; "
            "cannot build an index"
        )
    labels = population.label_matrix(rows, encoder.segments)
    embeddings = embed_frame(encoder, frame, batch_size, desc="embed anchors")
    return AnchorSet(ids, labels, frame, embeddings, encoder.split_of(ids), int((~found).sum()))


def run(config: BuildConfig, *, population: Any = None, encoder_and_info: Any = None,
        anchors: AnchorSet | None = None, set_as_current: bool = True) -> Path:
    """Build the bundle for ``config.date``; returns its directory.

    ``population`` / ``encoder_and_info`` / ``anchors`` let the weekly job reuse what it
    already loaded; each is computed here when omitted.
    """
    from index_builder.features import check_encoder_contract
    from index_builder.population import load_population, parse_date
    from lookalike.contract import load_contract
    from lookalike.feast_utils import open_store
    from training.artifact import load_registered_encoder

    as_of = parse_date(config.date)
    store = open_store(config.repo)
    encoder, info = encoder_and_info or load_registered_encoder(
        config.model.tracking_uri, config.model.name, config.model.ref)
    contract = load_contract(store, encoder.contract.service_name)
    check_encoder_contract(encoder, contract)
    population = population or load_population(store, as_of, encoder.contract.service_name)
    anchors = anchors or collect_anchors(store, population, encoder, config.batch_size)
    version = index_version(as_of.date().isoformat(), info.version)
    out_dir = Path(config.output_root) / version
    calibration_rows = np.flatnonzero(anchors.split == "validation")
    manifest = build_bundle_from_arrays(
        out_dir, anchors.embeddings, anchors.ids, anchors.labels, encoder.segments, calibration_rows,
        config.index, config.assignment,
        index_version=version, run_date=as_of.date().isoformat(),
        model_name=info.name, model_version=info.version, model_run_id=info.run_id,
        snapshot_hash=info.snapshot_hash,
        feature_service=contract.service_name, feature_service_version=contract.service_version,
        feature_repo=str(Path(config.repo).resolve()),
        counts={"opt_in_without_features": anchors.dropped_without_features,
                **{f"population_{k}": v for k, v in population.notes.items()}},
    )
    log.info("index bundle %s: %d anchors, %s index, recall@%s=%s", out_dir, len(anchors.ids),
             manifest["index_type"], manifest["recall_k"], manifest["recall_at_k"])
    if config.log_mlflow:
        from index_builder.tracking import log_run

        log_run(
            config.model.tracking_uri, config.experiment, f"index-{version}",
            tags={"stage": "build-index", "model_name": info.name, "model_version": info.version,
                  "index_version": version, "run_date": manifest["run_date"]},
            params=flatten(config_to_dict(config)),
            metrics={"recall_at_k": manifest["recall_at_k"], "anchors": len(anchors.ids),
                     "build_seconds": manifest["build_seconds"]},
            artifact_dirs={"index_bundle": out_dir},
        )
    if set_as_current:
        set_current(config.output_root, version, model_version=info.version)
    return out_dir


def add_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("configs/index.yaml"),
                        help="YAML config (default configs/index.yaml when present)")
    parser.add_argument("--repo", type=Path, help="Feast repo (default feature_repo)")
    parser.add_argument("--date", help="run date YYYY-MM-DD")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model-version", help="registered model version number")
    group.add_argument("--alias", help="registered model alias (default champion)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")

    def handler(args: argparse.Namespace) -> int:
        overrides = list(args.overrides)
        if args.repo:
            overrides.append(f"repo={args.repo}")
        if args.date:
            overrides.append(f"date={args.date}")
        if args.model_version or args.alias:
            overrides.append(f"model.ref={args.model_version or args.alias}")
        config_path = args.config if args.config and Path(args.config).is_file() else None
        config = load_config(BuildConfig, config_path, overrides)
        print(run(config))
        return 0

    parser.set_defaults(func=handler)
