"""``lookalike assign``: the unified segment table (contracts section 7).

Opt-in customers keep their explicit segments (score 1.0, source ``opt_in``). Every other
customer who has not objected to profiling is scored per segment by the scorer the bundle
selected for it (source ``lookalike``, score = that scorer's score) and holds the segment
where the score reaches the stored threshold; segments the bundle does not ship get no
lookalike rows. Suppressed customers are never
embedded and get no lookalike segment; their count goes to the manifest and the log.

:func:`score_neighbours` and :func:`decide` are the shared scoring API (serving uses them
too), re-exported from :mod:`index_builder.aggregation`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from index_builder.aggregation import (
    AGGREGATIONS,
    Calibration,
    best_f1_threshold,
    calibrate_thresholds,
    decide,
    score_neighbours,
)
from index_builder.bundle import IndexBundle, current_path, load_bundle, set_current
from index_builder.config import AssignConfig
from lookalike.artifacts import atomic_dir, write_manifest
from lookalike.config import cli_overrides, load_config

__all__ = [
    "AGGREGATIONS", "Calibration", "best_f1_threshold", "calibrate_thresholds", "decide",
    "score_neighbours", "segment_rows", "run", "add_cli", "SEGMENT_TABLE_SCHEMA",
]

log = logging.getLogger(__name__)

SEGMENTS_FILE = "segments.parquet"
SEGMENT_TABLE_KIND = "segment_table"
SEGMENT_TABLE_SCHEMA = pa.schema([
    ("customer_id", pa.int64()),
    ("segment", pa.string()),
    ("source", pa.string()),
    ("score", pa.float32()),
    ("model_version", pa.string()),
    ("index_version", pa.string()),
    ("run_date", pa.date32()),
])


def segment_rows(customer_ids: np.ndarray, decisions: np.ndarray, scores: np.ndarray,
                 segments: list[str]) -> pd.DataFrame:
    """Long format (customer_id, segment, score) for every True in ``decisions``."""
    rows, cols = np.nonzero(decisions)
    return pd.DataFrame({
        "customer_id": np.asarray(customer_ids, dtype=np.int64)[rows],
        "segment": np.asarray(segments, dtype=object)[cols],
        "score": scores[rows, cols].astype(np.float32),
    })


def opt_in_rows(customer_ids: np.ndarray, segment_lists: list[list[str]]) -> pd.DataFrame:
    ids = [cid for cid, segs in zip(customer_ids, segment_lists, strict=True) for _ in segs]
    segs = [s for segs in segment_lists for s in segs]
    return pd.DataFrame({"customer_id": np.asarray(ids, dtype=np.int64), "segment": segs,
                         "score": np.ones(len(segs), dtype=np.float32)})


def manifest_counts(population: Any, *, without_features: int, scored: int, assigned: int, opt_in_rows: int,
                    lookalike_rows: int) -> dict[str, int]:
    """The segment-table manifest's ``counts``: one definition for every engine, so their
    manifests can be compared field by field."""
    return {
        "customers": int(len(population.customer_ids)),
        "opt_in_customers": int(population.opt_in.sum()),
        "opt_in_without_labels": int((population.opt_in & ~population.has_labels).sum()),
        "suppressed_customers": int((population.suppressed & ~population.opt_in).sum()),
        "lookalike_candidates": int(population.lookalike_mask.sum()),
        "lookalike_without_features": int(without_features),
        "lookalike_scored": int(scored),
        "lookalike_customers_assigned": int(assigned),
        "opt_in_rows": int(opt_in_rows),
        "lookalike_rows": int(lookalike_rows),
    }


@dataclass
class LookalikeResult:
    customer_ids: np.ndarray
    scores: np.ndarray
    decisions: np.ndarray
    without_features: int
    embeddings: np.ndarray | None = None  # (n, dim), kept for the bundle's population


def score_customers(store: Any, population: Any, encoder: Any, bundle: IndexBundle,
                    batch_size: int) -> LookalikeResult:
    """Embed and score every customer eligible for lookalike segments."""
    from index_builder.features import embed_frame, point_in_time_features

    ids = population.customer_ids[population.lookalike_mask]
    frame, found = point_in_time_features(store, population.contract, ids, population.as_of)
    if (~found).any():
        log.warning("%d customer(s) have no legitimate-interest features in the TTL window and get no "
                    "lookalike segments", int((~found).sum()))
    ids, frame = ids[found], frame[found].reset_index(drop=True)
    embeddings = embed_frame(encoder, frame, batch_size, desc="embed customers")
    features = encoder.feature_matrix(frame) if bundle.needs_features and len(ids) else None
    scores, decisions = score_in_chunks(bundle, embeddings, features, batch_size)
    return LookalikeResult(ids, scores, decisions, int((~found).sum()), embeddings)


def score_in_chunks(bundle: IndexBundle, embeddings: np.ndarray, features: np.ndarray | None,
                    batch_size: int, exclude_anchor_rows: np.ndarray | None = None,
                    desc: str = "score customers") -> tuple[np.ndarray, np.ndarray]:
    """:meth:`IndexBundle.assign_scores` over row chunks, with a progress bar.

    The tower-kNN search runs once over all rows first: a large IVF bundle answers it from
    spilled lists, each read once per group of queries (``index_builder.spilled_lists``).
    """
    from tqdm import tqdm

    n, width = embeddings.shape[0], len(bundle.segments)
    scores, decisions = np.zeros((n, width), np.float32), np.zeros((n, width), bool)
    if n == 0:
        return scores, decisions
    sims, ids = bundle.search(embeddings, exclude_anchor_rows=exclude_anchor_rows)
    chunk = max(1, min(batch_size, 4096))
    for start in tqdm(range(0, n, chunk), desc=desc, unit="chunk", disable=n <= chunk):
        rows = slice(start, start + chunk)
        scored = bundle.scores_from_neighbours(sims[rows], ids[rows], embeddings[rows],
                                               None if features is None else features[rows],
                                               None if exclude_anchor_rows is None else exclude_anchor_rows[rows])
        scores[rows], decisions[rows] = scored.scores, scored.decisions
    return scores, decisions


def build_table(population: Any, result: LookalikeResult, bundle: IndexBundle) -> pa.Table:
    opt_in = opt_in_rows(population.customer_ids[population.opt_in],
                         [population.segment_lists[i] for i in np.flatnonzero(population.opt_in)])
    opt_in["source"] = "opt_in"
    lookalike = segment_rows(result.customer_ids, result.decisions, result.scores, bundle.segments)
    lookalike["source"] = "lookalike"
    table = pd.concat([opt_in, lookalike], ignore_index=True)
    table = table.sort_values(["customer_id", "source", "segment"], kind="stable").reset_index(drop=True)
    table["model_version"] = bundle.model_version
    table["index_version"] = bundle.index_version
    table["run_date"] = population.as_of.date()
    return pa.Table.from_pandas(table[SEGMENT_TABLE_SCHEMA.names], schema=SEGMENT_TABLE_SCHEMA,
                                preserve_index=False)


def write_segment_table(out_dir: Path, table: pa.Table, **manifest_fields: Any) -> dict[str, Any]:
    with atomic_dir(out_dir) as tmp:
        pq.write_table(table, tmp / SEGMENTS_FILE, compression="zstd")
        return write_manifest(tmp, SEGMENT_TABLE_KIND, row_count=table.num_rows, **manifest_fields)


def volumes(table: pa.Table) -> dict[str, dict[str, int]]:
    frame = table.select(["segment", "source"]).to_pandas()
    counts = frame.groupby(["segment", "source"]).size().unstack(fill_value=0)
    return {seg: {src: int(counts.loc[seg, src]) for src in counts.columns} for seg in counts.index}


def run(config: AssignConfig, *, population: Any = None, encoder_and_info: Any = None,
        bundle: IndexBundle | None = None, output_dir: Path | None = None,
        set_as_current: bool = True, on_scored: Callable[[LookalikeResult], None] | None = None) -> Path:
    """Write ``<output_root>/<date>/segments.parquet`` (atomically); returns the directory.

    ``on_scored`` receives the scored customers (ids, embeddings): the weekly job stores them
    as the bundle's population for ``/expand``.
    """
    from index_builder.features import check_encoder_contract
    from index_builder.population import load_population, parse_date
    from lookalike.contract import load_contract
    from lookalike.feast_utils import open_store
    from training.artifact import load_registered_encoder

    as_of = parse_date(config.date)
    bundle = bundle or load_bundle(config.bundle or current_path(config.index_root, "index bundle"))
    store = open_store(config.repo)
    # the encoder must be the one that embedded the anchors, whatever the aliases say now
    encoder, info = encoder_and_info or load_registered_encoder(
        config.model.tracking_uri, bundle.manifest.get("model_name", config.model.name), bundle.model_version)
    contract = load_contract(store, encoder.contract.service_name)
    check_encoder_contract(encoder, contract)
    population = population or load_population(store, as_of, encoder.contract.service_name)
    result = score_customers(store, population, encoder, bundle, config.batch_size)
    if on_scored is not None:
        on_scored(result)
    table = build_table(population, result, bundle)
    opt_in_rows = int(sum(1 for s in table.column("source").to_pylist() if s == "opt_in"))
    counts = manifest_counts(
        population, without_features=result.without_features, scored=int(len(result.customer_ids)),
        assigned=int(result.decisions.any(axis=1).sum()) if len(result.decisions) else 0,
        opt_in_rows=opt_in_rows, lookalike_rows=table.num_rows - opt_in_rows)
    suppressed = counts["suppressed_customers"]
    log.info("suppressed customers (no lookalike segments): %d", suppressed)
    search_recall = bundle.search_recall(result.embeddings) if result.embeddings is not None else None
    if search_recall and search_recall["min_recall"] and search_recall["recall_at_k"] < search_recall["min_recall"]:
        log.warning("index search recall@%d on %d scored customers is %.4f, below the index's guarantee of %.2f "
                    "(measured on held-out opt-in anchors): rebuild the index with a higher index.min_recall",
                    search_recall["k"], search_recall["queries"], search_recall["recall_at_k"],
                    search_recall["min_recall"])
    run_date = as_of.date().isoformat()
    out_dir = output_dir or Path(config.output_root) / run_date
    write_segment_table(
        out_dir, table, run_date=run_date, model_name=info.name, model_version=bundle.model_version,
        index_version=bundle.index_version, index_bundle=str(Path(bundle.path).resolve()),
        feature_service=contract.service_name, aggregation=bundle.assignment.aggregation,
        k=bundle.assignment.k, counts=counts, volumes=volumes(table), search_recall=search_recall,
    )
    log.info("segment table %s: %d rows (%d opt-in, %d lookalike)", out_dir, table.num_rows,
             counts["opt_in_rows"], counts["lookalike_rows"])
    if set_as_current and output_dir is None:
        set_current(config.output_root, run_date, index_version=bundle.index_version)
    return out_dir


def add_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config with AssignConfig keys")
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--date")
    parser.add_argument("--bundle", type=Path, help="index bundle (default: the current one)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")

    def handler(args: argparse.Namespace) -> int:
        overrides = cli_overrides(args, ["repo", "date", "bundle"])
        print(run(load_config(AssignConfig, args.config, overrides)))
        return 0

    parser.set_defaults(func=handler)
