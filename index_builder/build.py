"""``lookalike build-index``: embed opt-in anchors and write the FAISS index bundle.

Anchors are opt-in customers with valid consent and a labels row at the run date. Their
legitimate-interest features (point-in-time, through the privacy guard) are embedded by
the registered encoder, indexed for cosine search, and per-segment thresholds are
chosen per segment among candidate scorers from out-of-sample scores on the non-test
anchors (:mod:`index_builder.scorers`, :mod:`index_builder.selection`). The bundle is written atomically to
``<output_root>/<date>-m<model_version>/`` and logged to MLflow.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from index_builder import faiss_backend, selection_guard, tower_crossfit
from index_builder.bundle import AssignmentSpec, set_current, write_bundle
from index_builder.config import AssignmentParams, BuildConfig
from index_builder.scorers import (
    BLEND,
    FEATURE_SCORERS,
    AnchorData,
    FittedScorers,
    OutOfSample,
    ScorerParams,
    blend_out_of_sample,
    check_scorer_names,
    feature_knn_guard,
    fit_scorers,
    out_of_sample,
)
from index_builder.selection import Selection, select
from lookalike.config import config_to_dict, flatten, load_config
from lookalike.errors import DataValidationError

log = logging.getLogger(__name__)


def index_version(run_date: str, model_version: str) -> str:
    return f"{run_date}-m{model_version}"


@dataclass
class Calibrated:
    spec: AssignmentSpec
    customers: int
    selection: Selection | None = None
    scorers: FittedScorers | None = None


def calibrate(
    built: faiss_backend.BuiltIndex,
    data: AnchorData,
    segments: list[str],
    params: AssignmentParams,
    head: tuple[np.ndarray, np.ndarray] | None = None,
    segment_names: dict[str, str] | None = None,
    by_fold: tower_crossfit.FoldEmbeddings | None = None,
) -> Calibrated:
    """Per-segment scorer, threshold and shipping decision from out-of-sample scores.

    ``fixed`` mode keeps the tower kNN with ``fixed_threshold`` everywhere. ``calibrated``
    mode scores every candidate out of sample on the non-test anchors and selects per segment
    (:mod:`index_builder.selection`); the test split is never read. ``by_fold`` (the model's
    fold towers) gives the tower scorers out-of-sample scores on every non-test anchor instead
    of the validation split (:mod:`index_builder.tower_crossfit`).
    """
    k = min(params.k, built.ntotal - 1)
    if k < 1:
        raise DataValidationError(f"need at least 2 anchors to assign segments, found {built.ntotal}")
    n = len(segments)
    common = dict(k=k, aggregation=params.aggregation, segments=list(segments), threshold_mode=params.threshold_mode,
                  search_params=dict(built.params), fixed_threshold=params.fixed_threshold,
                  threshold_floor=params.threshold_floor, min_positives=params.min_positives,
                  segment_names=dict(segment_names or {}))
    fit_rows = data.fit_rows
    if params.threshold_mode == "fixed" or len(fit_rows) < 2:
        if params.threshold_mode == "calibrated":
            log.warning("no non-test anchors to calibrate on; using the fixed threshold %.2f", params.fixed_threshold)
        spec = AssignmentSpec(thresholds=[params.fixed_threshold] * n, threshold_source=["fixed"] * n,
                              validation_f1=[None] * n, **common)  # type: ignore[arg-type]
        return Calibrated(spec, 0)
    names = check_scorer_names(params.scorers)
    if data.features.shape[1] == 0:
        names = [s for s in names if s not in FEATURE_SCORERS]
    names, excluded = feature_knn_guard(names, len(data.split), params.feature_knn_max_anchors)
    for name, why in excluded.items():
        log.warning("scorer %s %s", name, why)
    scorer_params = ScorerParams(k=k, aggregation=params.aggregation, folds=params.cv_folds, seed=params.seed,
                                 threads=params.threads)
    # BLAS/OpenMP pools at ``threads``: several threads busy-wait on a shared machine (scorers.py)
    with threadpool_limits(params.threads):
        oos: dict[str, OutOfSample] = {}
        for name in names:
            if name == BLEND:
                continue  # from the other candidates' scores, below
            started = time.perf_counter()
            if by_fold is not None and name in tower_crossfit.TOWER_SCORERS:
                result = tower_crossfit.out_of_sample(name, data, scorer_params, by_fold, head)
            else:
                result = out_of_sample(name, data, scorer_params, head)
            if result is None:
                log.info("scorer %s unavailable here (no validation anchors or no trained head)", name)
                continue
            oos[name] = result
            log.info("scorer %s: out-of-sample scores for %d anchors in %.1fs", name, len(result.rows),
                     time.perf_counter() - started)
        blend = blend_out_of_sample(oos, fit_rows) if BLEND in names else None
        if blend is not None:
            oos[BLEND] = blend[1]
            log.info("scorer blend: mean of %s", ", ".join(blend[0]))
        labels = data.dense_labels(np.arange(data.labels.shape[0]))
        select_kwargs = dict(
            folds=params.cv_folds, tie_tolerance=params.tie_tolerance, min_positives=params.min_positives,
            threshold_floor=params.threshold_floor, ship_without_signal=params.ship_without_signal,
            ship_segments=params.ship_segments, seed=params.seed, excluded_scorers=excluded,
            blend_members=blend[0] if blend is not None else (), f1_tolerance=params.f1_tolerance,
        )
        selection = select(oos, labels, segments, prevalence_rows=fit_rows, **select_kwargs)  # type: ignore[arg-type]
        if params.selection_guard:
            started = time.perf_counter()
            selection = selection_guard.guard(
                selection, oos, labels, segments, fit_rows, tolerance=params.f1_tolerance, folds=params.cv_folds,
                seed=params.seed, min_rows=10 * params.cv_folds, select_kwargs=select_kwargs,
                ship_segments=params.ship_segments, ship_without_signal=params.ship_without_signal)
            log.info("selection guard (nested cross-validation, %.1fs): %s", time.perf_counter() - started,
                     selection.guard.get("chosen", selection.guard.get("skipped")))
        started = time.perf_counter()
        fitted = fit_scorers(list(oos), data, scorer_params, head)
        log.info("fitted %s on %d non-test anchors in %.1fs", ", ".join(fitted.names) or "nothing", len(fit_rows),
                 time.perf_counter() - started)
    chosen = pd.Series([c.scorer or "none" for c in selection.segments]).value_counts().to_dict()
    log.info("selected scorers per segment: %s; not shipped: %s", chosen,
             [c.segment for c in selection.segments if not c.shipped])
    if selection.tradeoff:
        log.info("thresholds: micro-F1 weight %.2f (macro tolerance %.3f) moved %d segment thresholds",
                 selection.tradeoff["weight"], selection.tradeoff["macro_tolerance"], selection.tradeoff["segments"])
    spec = AssignmentSpec(
        thresholds=[float(t) for t in selection.thresholds],
        threshold_source=["calibrated" if c.scorer else "fallback_low_support" for c in selection.segments],
        validation_f1=[c.oos_f1 if c.scorer else None for c in selection.segments], **common,  # type: ignore[arg-type]
    )
    return Calibrated(spec, int(len(fit_rows)), selection, fitted)


def build_bundle_from_arrays(
    out_dir: Path,
    embeddings: np.ndarray,
    anchor_ids: np.ndarray,
    labels: sp.csr_matrix,
    segments: list[str],
    split: np.ndarray,
    index_params: faiss_backend.IndexParams,
    assignment: AssignmentParams,
    features: np.ndarray | None = None,
    head: tuple[np.ndarray, np.ndarray] | None = None,
    segment_names: dict[str, str] | None = None,
    fold_embeddings: tower_crossfit.FoldEmbeddings | None = None,
    **manifest_fields: Any,
) -> dict[str, Any]:
    """Index + scorer selection + atomic bundle write from in-memory anchors; returns the manifest.

    ``split`` is the encoder's train/validation/test split of the anchors; ``features`` the
    preprocessed feature matrix (None: only the embedding scorers are candidates);
    ``fold_embeddings`` the non-test anchors embedded by the model's fold towers, if it has any.
    """
    built = faiss_backend.build_index(embeddings, index_params, recall_k=assignment.k)
    normalised = faiss_backend.l2_normalise(embeddings)
    data = AnchorData(normalised, np.zeros((len(anchor_ids), 0), np.float32) if features is None
                      else np.ascontiguousarray(features, dtype=np.float32), sp.csr_matrix(labels), np.asarray(split))
    calibrated = calibrate(built, data, segments, assignment, head, segment_names, fold_embeddings)
    counts = dict(manifest_fields.pop("counts", {}))
    counts.update({"anchors": int(len(anchor_ids)), "segments": len(segments),
                   "calibration_customers": calibrated.customers,
                   "tower_fold_towers": 0 if fold_embeddings is None else len(fold_embeddings.embeddings),
                   "segments_not_shipped": 0 if calibrated.selection is None
                   else int((~calibrated.selection.shipped).sum())})
    return write_bundle(out_dir, built, anchor_ids, labels, calibrated.spec, calibrated.selection,
                        calibrated.scorers, counts=counts, **manifest_fields)


@dataclass
class AnchorSet:
    """Everything the index and the evaluation need about the anchors at a date."""

    ids: np.ndarray
    labels: sp.csr_matrix
    frame: Any  # pandas frame of contract columns (same row order as ids)
    embeddings: np.ndarray
    split: np.ndarray
    dropped_without_features: int
    features: np.ndarray | None = None  # encoder.feature_matrix(frame), filled on first use


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


def anchors_features(encoder: Any, anchors: AnchorSet) -> np.ndarray:
    """The preprocessed feature matrix of the anchors (computed once, cached on the set)."""
    if anchors.features is None:
        anchors.features = np.ascontiguousarray(encoder.feature_matrix(anchors.frame), dtype=np.float32)
    return anchors.features


def _segment_head(encoder: Any) -> tuple[np.ndarray, np.ndarray] | None:
    arrays = encoder.segment_head_arrays() if hasattr(encoder, "segment_head_arrays") else None
    if arrays is not None and arrays[0].shape[0] != len(encoder.segments):
        return None
    return arrays


def _fold_embeddings(config: BuildConfig, info: Any, anchors: AnchorSet,
                     n_segments: int) -> tower_crossfit.FoldEmbeddings | None:
    """The non-test anchors embedded by the model's fold towers (None: it has none, or the
    tower scorers are not calibrated here)."""
    assignment = config.assignment
    if assignment.threshold_mode != "calibrated" or not set(tower_crossfit.TOWER_SCORERS) & set(assignment.scorers):
        return None
    from training.fold_towers import load_registered_fold_towers

    fold_towers = load_registered_fold_towers(config.model.tracking_uri, info.name, info.version)
    if fold_towers is None:
        log.info("model v%s has no fold towers: tower scorers are calibrated on the validation split", info.version)
        return None
    by_fold = tower_crossfit.embed_by_fold(fold_towers, anchors.ids, anchors.frame, anchors.split, n_segments,
                                           config.batch_size)
    log.info("model v%s: %d fold towers score the tower out of sample on %d non-test anchors (%d outside "
             "the training snapshot)", info.version, len(fold_towers.encoders), len(by_fold.folds),
             int((by_fold.folds < 0).sum()))
    return by_fold


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
    from index_builder.catalog import default_catalog, segment_names

    catalog = config.segment_catalog or default_catalog(Path(config.repo), store)
    fold_embeddings = _fold_embeddings(config, info, anchors, len(encoder.segments))
    manifest = build_bundle_from_arrays(
        out_dir, anchors.embeddings, anchors.ids, anchors.labels, encoder.segments, anchors.split,
        config.index, config.assignment, features=anchors_features(encoder, anchors),
        head=_segment_head(encoder), segment_names=segment_names(catalog), fold_embeddings=fold_embeddings,
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
