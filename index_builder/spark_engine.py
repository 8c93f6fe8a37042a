"""Weekly lookalike assignment on Spark (``lookalike weekly --engine spark``).

Same contract and same result as :func:`index_builder.assign.run` (the local engine); what
changes is where the population-sized work runs:

- driver: the population's status arrays (consent, suppression, labels: one flag per
  customer), the anchor embeddings and the FAISS index -- built once, exactly as the local
  engine builds them -- and the manifest;
- executors: the point-in-time read of the model-input views (a Spark as-of join over the
  feature tables, the window Feast's join uses), embedding in ``mapInPandas`` with the
  model's preprocessing and weights broadcast, k-NN search, aggregation and thresholding
  per partition, all through the bundle's own scoring (:meth:`IndexBundle.score_neighbours`,
  :meth:`IndexBundle.decide`), so the engines cannot drift apart;
- the unified table is written by Spark's Parquet writer, sorted like the local one, into
  the run date's directory (``segments/<run_date>/segments.parquet/`` holds part files),
  staged and swapped in by the weekly job exactly like the local engine's output.

The index is broadcast whole below ``shard_above_mb``. Above it, it is split by anchor
range: each shard keeps the trained coarse quantizer (IVF) or is an exact slice (flat), so
the vectors a query scans are the same as with the whole index; every (query partition,
shard) pair is searched separately and the partial top-k lists are merged per customer.
"""

from __future__ import annotations

import io
import logging
import math
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import Field

from index_builder.bundle import AssignmentSpec, IndexBundle
from lookalike.config import NonNegativeInt, PositiveFloat, PositiveInt, stage_config
from lookalike.contract import JOIN_KEY, FeatureContract
from lookalike.errors import ConfigError

log = logging.getLogger(__name__)

LOOKALIKE_SCHEMA = "customer_id long, segment string, score float"
EMBEDDED_SCHEMA = "customer_id long, found boolean, embedding array<float>"
# with the preprocessed feature matrix, for bundles whose selected scorers read features
EMBEDDED_FEATURES_SCHEMA = EMBEDDED_SCHEMA + ", features array<float>"
PARTIAL_SCHEMA = "customer_id long, shard int, sims array<float>, ids array<long>"


@stage_config
class SparkParams:
    """How the Spark engine runs (``spark.<key>=...`` on the weekly command line)."""

    # local[N], spark://host:port, yarn, k8s://...: Spark checks it when the session starts.
    master: Annotated[str, Field(min_length=1)] = "local[2]"
    # Broadcast the whole anchor index below this size; shard it by anchor range above.
    shard_above_mb: PositiveFloat = 1024.0
    # Partitions of the customer population; 0 = twice Spark's default parallelism.
    partitions: NonNegativeInt = 0
    # Rows per Arrow batch handed to the Python workers (embedding + search batch size).
    batch_rows: PositiveInt = 16384


# ------------------------------------------------------------------ shipping to executors
def _encoder_bytes(encoder: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(encoder.checkpoint_payload(), buffer)
    return buffer.getvalue()


def _index_bytes(index: Any) -> bytes:
    import faiss

    return bytes(faiss.serialize_index(index).tobytes())


def shard_index(index: Any, shards: int) -> list[bytes]:
    """Split ``index`` into ``shards`` serialized indexes by anchor row range; each returns
    global anchor rows from its search, and together they scan what ``index`` scans."""
    import faiss

    n = int(index.ntotal)
    bounds = np.linspace(0, n, shards + 1).astype(np.int64)
    if isinstance(index, faiss.IndexFlat):
        vectors = index.reconstruct_n(0, n)
        parts = []
        for low, high in zip(bounds[:-1], bounds[1:], strict=True):
            flat = faiss.IndexFlat(index.d, index.metric_type)
            mapped = faiss.IndexIDMap2(flat)
            mapped.add_with_ids(vectors[low:high], np.arange(low, high, dtype=np.int64))
            parts.append(_index_bytes(mapped))
        return parts
    if isinstance(index, faiss.IndexIVF):
        ivf: Any = faiss.extract_index_ivf(index)
        readable: Any = faiss.clone_index(ivf)  # a direct map on a copy: the live index stays untouched
        readable.make_direct_map()
        vectors = readable.reconstruct_n(0, n)
        del readable
        parts = []
        for low, high in zip(bounds[:-1], bounds[1:], strict=True):
            shard: Any = faiss.clone_index(ivf)
            shard.reset()  # keeps the trained coarse quantizer: same lists probed per query
            shard.add_with_ids(vectors[low:high], np.arange(low, high, dtype=np.int64))
            shard.nprobe = ivf.nprobe
            parts.append(_index_bytes(shard))
        return parts
    raise ConfigError(f"index type {type(index).__name__} cannot be sharded; use index.type=flat or ivf "
                      "or raise spark.shard_above_mb")


def merge_top_k(sims: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of several partial top-k lists per query (rows aligned across the lists)."""
    all_sims = np.concatenate(sims, axis=1)
    all_ids = np.concatenate(ids, axis=1)
    all_sims = np.where(all_ids >= 0, all_sims, -np.inf)
    # Stable: equal similarities keep shard order (= anchor row order), like one flat index.
    order = np.argsort(-all_sims, axis=1, kind="stable")[:, :k]
    top_sims = np.take_along_axis(all_sims, order, axis=1)
    top_ids = np.take_along_axis(all_ids, order, axis=1)
    return np.where(np.isfinite(top_sims), top_sims, 0.0).astype(np.float32), top_ids


# Python workers keep what they rebuilt from broadcasts (model, index) across tasks, keyed
# by a token made on the driver (a worker-side Broadcast has no id of its own).
_WORKER_CACHE: dict[Any, Any] = {}


def _broadcast(sc: Any, value: Any) -> tuple[str, Any]:
    return uuid.uuid4().hex, sc.broadcast(value)


def _cached(key: Any, build: Any) -> Any:
    if key not in _WORKER_CACHE:
        if len(_WORKER_CACHE) >= 4:  # one model + one index (or shard) per run at a time
            _WORKER_CACHE.clear()
        _WORKER_CACHE[key] = build()
    return _WORKER_CACHE[key]


def _one_thread() -> None:
    """Spark runs one task per core: torch/faiss must not spread each task over all cores."""
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)


def _load_encoder(payload: bytes) -> Any:
    from training.artifact import LookalikeEncoder

    with tempfile.NamedTemporaryFile(suffix=".pt") as handle:
        handle.write(payload)
        handle.flush()
        return LookalikeEncoder.load(handle.name)


def _load_bundle(shipped: dict[str, Any], index_payload: bytes) -> IndexBundle:
    import faiss

    from index_builder import faiss_backend

    index = faiss.deserialize_index(np.frombuffer(index_payload, dtype=np.uint8))
    assignment = AssignmentSpec.from_json(shipped["assignment"])
    faiss_backend.set_search_params(index, assignment.search_params)
    return IndexBundle(Path(shipped["path"]), index, shipped["anchor_ids"], shipped["anchor_segments"],
                       assignment, shipped["manifest"], selection=shipped.get("selection"),
                       scorers=shipped.get("scorers"))


# ------------------------------------------------------------------ point-in-time features
def contract_features(spark: Any, store: Any, contract: FeatureContract, candidates: Any, as_of: datetime) -> Any:
    """``candidates`` (customer_id) left-joined with each model-input view's latest row with
    ``as_of - ttl <= event_timestamp <= as_of`` (ties: latest ``created_timestamp``), columns
    named ``<view>__<field>`` -- Feast's point-in-time join for one timestamp, in Spark."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from lookalike.snapshot import TIMESTAMP_COLUMN, _source_path

    service = store.get_feature_service(contract.service_name)
    projections = {p.name_to_use(): p for p in service.feature_view_projections}
    stamp = pd.Timestamp(as_of)
    frame = candidates
    for view_name in contract.views:
        view = store.get_feature_view(projections[view_name].name)
        specs = [f for f in contract.features if f.view == view_name]
        source = spark.read.parquet(str(_source_path(view)))
        window = F.col(TIMESTAMP_COLUMN) <= F.lit(stamp.to_pydatetime())
        if view.ttl and view.ttl.total_seconds() > 0:
            window = window & (F.col(TIMESTAMP_COLUMN) >= F.lit((stamp - view.ttl).to_pydatetime()))
        order = [F.col(TIMESTAMP_COLUMN).desc()]
        if "created_timestamp" in source.columns:
            order.append(F.col("created_timestamp").desc_nulls_last())
        latest = (source.where(window)
                  .withColumn("_rank", F.row_number().over(Window.partitionBy(JOIN_KEY).orderBy(*order)))
                  .where(F.col("_rank") == 1)
                  .select(JOIN_KEY, *[F.col(s.name).alias(s.column) for s in specs]))
        frame = frame.join(latest, on=JOIN_KEY, how="left")
    return frame.select(JOIN_KEY, *contract.columns)


# ------------------------------------------------------------------ executor functions
def _embed_partitions(encoder_b: tuple[str, Any], contract_json: dict[str, Any], with_features: bool = False) -> Any:
    def embed(batches: Any) -> Any:
        from lookalike.contract import cast_to_contract

        _one_thread()
        contract = FeatureContract.from_dict(contract_json)
        encoder = _cached(encoder_b[0], lambda: _load_encoder(encoder_b[1].value))
        for frame in batches:
            frame = cast_to_contract(frame.reset_index(drop=True), contract)
            found = frame[contract.columns].notna().any(axis=1).to_numpy()
            embeddings = np.zeros((len(frame), encoder.embedding_dim), dtype=np.float32)
            matrix = None
            if found.any():
                embeddings[found] = encoder.embed(frame[found].reset_index(drop=True))
            out = pd.DataFrame({JOIN_KEY: frame[JOIN_KEY].to_numpy(np.int64), "found": found,
                                "embedding": list(embeddings)})
            if with_features:
                matrix = encoder.feature_matrix(frame) if len(frame) else np.zeros((0, 0), np.float32)
                out["features"] = list(np.asarray(matrix, dtype=np.float32))
            yield out
    return embed


def _rows(bundle: IndexBundle, ids: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    from index_builder.assign import segment_rows

    return segment_rows(ids, bundle.decide(scores), scores, bundle.segments)


def _score_partitions(shipped_b: tuple[str, Any], index_b: tuple[str, Any]) -> Any:
    """Whole index on every executor: search, aggregate, threshold per Arrow batch."""
    from index_builder.assign import segment_rows

    def score(batches: Any) -> Any:
        _one_thread()
        shipped = shipped_b[1].value
        bundle = _cached(index_b[0], lambda: _load_bundle(shipped, index_b[1].value))
        for frame in batches:
            if frame.empty:
                continue
            vectors = np.stack(frame["embedding"].to_numpy()).astype(np.float32)
            features = np.stack(frame["features"].to_numpy()).astype(np.float32) if "features" in frame else None
            # the same scoring as the local engine and /assign: each segment's selected scorer
            scored = bundle.assign_scores(vectors, features)
            yield segment_rows(frame[JOIN_KEY].to_numpy(np.int64), scored.decisions, scored.scores, bundle.segments)
    return score


def _search_shard_partitions(shipped_b: tuple[str, Any], shard_bs: list[tuple[str, Any]], k: int) -> Any:
    """One (query rows, shard) pair per row: partial top-k against that shard only."""
    def search(batches: Any) -> Any:
        from index_builder import faiss_backend

        _one_thread()
        shipped = shipped_b[1].value
        for frame in batches:
            for shard, rows in frame.groupby("shard", sort=True):
                token, broadcast = shard_bs[int(shard)]
                index = _cached(token, lambda b=broadcast: _load_bundle(shipped, b.value).index)
                vectors = faiss_backend.l2_normalise(np.stack(rows["embedding"].to_numpy()))
                sims, ids = faiss_backend.search(index, vectors, k)
                yield pd.DataFrame({JOIN_KEY: rows[JOIN_KEY].to_numpy(np.int64), "shard": np.int32(shard),
                                    "sims": list(sims), "ids": list(ids)})
    return search


def _merge_partitions(shipped_b: tuple[str, Any], k: int) -> Any:
    """Per customer: merge the shards' partial top-k, then the bundle's selected scorers + thresholds."""
    from index_builder.assign import segment_rows

    def merge(batches: Any) -> Any:
        shipped = shipped_b[1].value
        bundle = _cached(shipped_b[0], lambda: _load_bundle(shipped, _empty_index(shipped)))
        for frame in batches:
            if frame.empty:
                continue
            partials = frame["partials"].tolist()
            shards = len(partials[0])
            sims = [np.stack([p[s]["sims"] for p in partials]) for s in range(shards)]
            ids = [np.stack([p[s]["ids"] for p in partials]) for s in range(shards)]
            top_sims, top_ids = merge_top_k(sims, ids, k)
            customer_ids = frame[JOIN_KEY].to_numpy(np.int64)
            if "embedding" not in frame:  # tower kNN only: the neighbours are all it needs
                yield _rows(bundle, customer_ids, bundle.score_neighbours(top_sims, top_ids))
                continue
            vectors = np.stack(frame["embedding"].to_numpy()).astype(np.float32)
            features = np.stack(frame["features"].to_numpy()).astype(np.float32) if "features" in frame else None
            scored = bundle.scores_from_neighbours(top_sims, top_ids, vectors, features)
            yield segment_rows(customer_ids, scored.decisions, scored.scores, bundle.segments)
    return merge


def _empty_index(shipped: dict[str, Any]) -> bytes:
    import faiss

    # Scoring merged neighbours needs the labels and thresholds, not the vectors.
    return _index_bytes(faiss.IndexFlatIP(int(shipped["manifest"]["dim"])))


# ------------------------------------------------------------------ population embedding shards
def write_population_shards(embedded: Any, directory: Path) -> None:
    """The embeddings the ``mapInPandas`` stage computed (``embedded``, persisted: nothing is
    embedded twice) of customers with features, written by the executors as Parquet part files
    sorted by customer id across files (range partitioning): part ``i`` holds ids below part
    ``i + 1``'s, so the driver streams them into the bundle's memory map front to back."""
    from pyspark.sql import functions as F

    (embedded.where(F.col("found")).select(JOIN_KEY, "embedding").orderBy(JOIN_KEY)
     .write.parquet(str(directory), compression="zstd"))


def _shard_files(directory: Path) -> list[Path]:
    # part-<partition index>-...: name order is partition order, hence id order
    return sorted(Path(directory).glob("part-*.parquet"))


def shard_customer_ids(directory: Path) -> np.ndarray:
    """Customer ids of the shards (int64, 8 bytes per customer on the driver), in shard order."""
    import pyarrow.parquet as pq

    parts = [pq.read_table(path, columns=[JOIN_KEY]).column(JOIN_KEY).to_numpy() for path in _shard_files(directory)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def shard_embeddings(directory: Path, batch_rows: int = 65_536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids, float32 (rows, dim))`` blocks from the shards, one Arrow record batch at a time,
    in shard order; the list column is flattened by Arrow, never into Python objects."""
    import pyarrow.parquet as pq

    for path in _shard_files(directory):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=[JOIN_KEY, "embedding"]):
            if batch.num_rows == 0:
                continue
            ids = batch.column(JOIN_KEY).to_numpy().astype(np.int64)
            values = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
            yield ids, values.astype(np.float32, copy=False).reshape(len(ids), -1)


# ------------------------------------------------------------------ the engine
@dataclass
class SparkScored:
    rows: Any  # Spark DataFrame (customer_id, segment, score) of lookalike segments held
    scored: int
    without_features: int
    assigned_customers: int
    shards: int
    broadcasts: list[Any]

    def release(self) -> None:
        """Drop the cached rows and the broadcast model/index from the executors."""
        self.rows.unpersist()
        for broadcast in self.broadcasts:
            broadcast.destroy()


def score_population(spark: Any, store: Any, population: Any, encoder: Any, bundle: IndexBundle,
                     params: SparkParams, population_dir: Path | None = None) -> SparkScored:
    """Embed, search, aggregate and threshold every lookalike candidate on the executors;
    with ``population_dir``, the executors also write the embeddings they computed there
    (:func:`write_population_shards`) for the bundle's population files."""
    from pyspark.sql import functions as F

    ids = population.customer_ids[population.lookalike_mask]
    partitions = params.partitions or 2 * spark.sparkContext.defaultParallelism
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(params.batch_rows))
    candidates = spark.createDataFrame(pd.DataFrame({JOIN_KEY: ids.astype(np.int64)})).repartition(partitions)
    features = contract_features(spark, store, population.contract, candidates, population.as_of)
    sc = spark.sparkContext
    encoder_b = _broadcast(sc, _encoder_bytes(encoder))
    with_features = bundle.needs_features
    embedded = features.mapInPandas(_embed_partitions(encoder_b, population.contract.to_dict(), with_features),
                                    EMBEDDED_FEATURES_SCHEMA if with_features else EMBEDDED_SCHEMA)
    embedded = embedded.persist()
    counts = embedded.groupBy("found").count().collect()
    by_found = {bool(r["found"]): int(r["count"]) for r in counts}
    scored, without = by_found.get(True, 0), by_found.get(False, 0)
    if without:
        log.warning("%d customer(s) have no legitimate-interest features in the TTL window and get no "
                    "lookalike segments", without)
    if population_dir is not None:
        write_population_shards(embedded, population_dir)
    shipped = {"path": str(bundle.path), "anchor_ids": bundle.anchor_ids, "anchor_segments": bundle.anchor_segments,
               "assignment": bundle.assignment.to_json(), "manifest": bundle.manifest,
               "selection": bundle.selection, "scorers": bundle.scorers}
    shipped_b = _broadcast(sc, shipped)
    index_payload = _index_bytes(bundle.index)
    shard_count = max(1, math.ceil(len(index_payload) / (params.shard_above_mb * 2**20)))
    queries = embedded.where(F.col("found")).select(JOIN_KEY, "embedding", *(["features"] if with_features else []))
    k = min(bundle.assignment.k, len(bundle.anchor_ids))
    if shard_count == 1:
        index_b = _broadcast(sc, index_payload)
        rows = queries.mapInPandas(_score_partitions(shipped_b, index_b), LOOKALIKE_SCHEMA)
    else:
        shard_bs = [_broadcast(sc, part) for part in shard_index(bundle.index, shard_count)]
        log.info("anchor index %.1f MiB > %.0f MiB: searching %d shards by anchor range",
                 len(index_payload) / 2**20, params.shard_above_mb, shard_count)
        pairs = queries.crossJoin(spark.range(shard_count).withColumnRenamed("id", "shard"))
        partial = pairs.mapInPandas(_search_shard_partitions(shipped_b, shard_bs, k), PARTIAL_SCHEMA)
        # collect_list keeps no order: sort each customer's partials by shard (the struct's first field).
        grouped = (partial.withColumn("part", F.struct("shard", "sims", "ids"))
                   .groupBy(JOIN_KEY).agg(F.array_sort(F.collect_list("part")).alias("partials")))
        if bundle.selection is not None and set(bundle.selection.columns_by_scorer()) - {"tower_knn"}:
            # segments scored by other scorers need the customer's embedding (and features)
            grouped = grouped.join(queries, on=JOIN_KEY)
        rows = grouped.mapInPandas(_merge_partitions(shipped_b, k), LOOKALIKE_SCHEMA)
    rows = rows.persist()
    assigned = rows.select(JOIN_KEY).distinct().count()
    embedded.unpersist()
    shipped_all = [encoder_b, shipped_b, *([index_b] if shard_count == 1 else shard_bs)]
    return SparkScored(rows, scored, without, int(assigned), shard_count, [b for _, b in shipped_all])


def run(config: Any, params: SparkParams, *, population: Any, encoder_and_info: Any, bundle: IndexBundle,
        output_dir: Path, population_dir: Path | None = None) -> Path:
    """The unified segment table for ``population`` written by Spark into ``output_dir``
    (staged: the weekly job swaps it in); same rows, manifest and counts as the local engine.
    With ``population_dir``, also the scored customers' embeddings as Parquet shards there."""
    from pyspark.sql import functions as F

    from index_builder.assign import (
        SEGMENT_TABLE_KIND,
        SEGMENT_TABLE_SCHEMA,
        SEGMENTS_FILE,
        manifest_counts,
        opt_in_rows,
    )
    from lookalike.artifacts import atomic_dir, write_manifest
    from lookalike.feast_utils import open_store
    from spark_jobs.session import get_spark

    encoder, info = encoder_and_info
    store = open_store(config.repo)
    spark = get_spark(params.master, "lookalike-weekly")
    result = score_population(spark, store, population, encoder, bundle, params, population_dir)
    opt_in_ids = population.customer_ids[population.opt_in]
    opt_in = opt_in_rows(opt_in_ids, [population.segment_lists[i] for i in np.flatnonzero(population.opt_in)])
    opt_in_frame = spark.createDataFrame(opt_in if len(opt_in) else pd.DataFrame(
        {"customer_id": pd.Series(dtype="int64"), "segment": pd.Series(dtype="object"),
         "score": pd.Series(dtype="float32")}), schema=LOOKALIKE_SCHEMA)
    run_date = population.as_of.date()
    table = (opt_in_frame.withColumn("source", F.lit("opt_in"))
             .unionByName(result.rows.withColumn("source", F.lit("lookalike")))
             .withColumn("model_version", F.lit(bundle.model_version))
             .withColumn("index_version", F.lit(bundle.index_version))
             .withColumn("run_date", F.lit(run_date).cast("date"))
             .select(*SEGMENT_TABLE_SCHEMA.names)
             .orderBy(JOIN_KEY, "source", "segment"))
    volumes_rows = table.groupBy("segment", "source").count().collect()
    volumes: dict[str, dict[str, int]] = {}
    for row in sorted(volumes_rows, key=lambda r: (r["segment"], r["source"])):
        volumes.setdefault(row["segment"], {"lookalike": 0, "opt_in": 0})[row["source"]] = int(row["count"])
    lookalike_rows = sum(v["lookalike"] for v in volumes.values())
    counts = manifest_counts(population, without_features=result.without_features, scored=result.scored,
                             assigned=result.assigned_customers, opt_in_rows=int(len(opt_in)),
                             lookalike_rows=lookalike_rows)
    with atomic_dir(output_dir) as tmp:
        table.write.parquet(str(tmp / SEGMENTS_FILE), compression="zstd")
        write_manifest(tmp, SEGMENT_TABLE_KIND, row_count=counts["opt_in_rows"] + counts["lookalike_rows"],
                       run_date=run_date.isoformat(), model_name=info.name, model_version=bundle.model_version,
                       index_version=bundle.index_version, index_bundle=str(Path(bundle.path).resolve()),
                       feature_service=population.contract.service_name,
                       aggregation=bundle.assignment.aggregation, k=bundle.assignment.k, counts=counts,
                       volumes=volumes, engine="spark", spark_master=params.master, index_shards=result.shards)
    result.release()
    log.info("segment table %s (spark, %d index shard(s)): %d opt-in rows, %d lookalike rows", output_dir,
             result.shards, counts["opt_in_rows"], counts["lookalike_rows"])
    return output_dir
