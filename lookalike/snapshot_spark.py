"""The training snapshot computed and written by Spark, for repos on Feast's Spark offline store.

Same contract as the file-store path in ``lookalike.snapshot`` (same rows, columns, dtypes
and manifest counts), but nothing population-sized reaches the driver:

- consent and suppression are resolved in Spark (latest row per customer inside the
  view's TTL window, ties on ``created_timestamp``: Feast's window);
- the entity frame handed to Feast is a Spark DataFrame, and Feast's ``SparkRetrievalJob``
  is read with ``to_spark_df()``, never ``to_df()``;
- casting, label normalisation and the per-view "no row inside the TTL" counts run in
  Spark; the Parquet part files are written by Spark's writer into the staging directory.

What the driver does receive: counts, at most ten unknown segment ids, and (only without a
segment catalog) the distinct segment ids, which are catalog-sized.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pandas as pd

from lookalike.contract import JOIN_KEY, FeatureContract, find_view_by_role
from lookalike.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

TIMESTAMP_COLUMN = "event_timestamp"
CREATED_COLUMN = "created_timestamp"
SEGMENTS_COLUMN = "segments"
SPARK_OFFLINE_STORE = "spark"
_NUMERIC = ("Float64", "Float32", "Int64", "Int32")


def uses_spark_offline_store(store: Any) -> bool:
    return str(getattr(store.config.offline_store, "type", "file")) == SPARK_OFFLINE_STORE


@dataclass
class SparkSnapshotStats:
    """What the manifest needs, computed by Spark aggregates."""

    row_count: int
    customers_opted_in: int
    customers_suppressed_excluded: int
    customers_without_segments: int
    rows_missing_features: dict[str, int] = field(default_factory=dict)
    rows_dropped_by_feast: int = 0


def spark_session_for(store: Any) -> Any:
    """The session Feast's Spark offline store uses, with the project's timestamp settings."""
    from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
        get_spark_session_or_start_new_with_repoconfig,
    )

    spark = get_spark_session_or_start_new_with_repoconfig(store.config.offline_store)
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    return spark


def _source_path(view: Any) -> str:
    path = getattr(view.batch_source, "path", None)
    if not path:
        raise ConfigError(f"feature view {view.name!r} has no path source")
    return str(path)


def _read_source(spark: Any, view: Any, columns: list[str]) -> Any:
    path = _source_path(view)
    if "://" not in path and not Path(path).exists():
        raise DataValidationError(f"feature table for view {view.name!r} not found at {path}")
    frame = spark.read.parquet(path)
    missing = [c for c in [JOIN_KEY, TIMESTAMP_COLUMN, *columns] if c not in frame.columns]
    if missing:
        raise DataValidationError(f"feature table {path} (view {view.name!r}) lacks column(s) {missing}")
    return frame


def _window_condition(stamp: Any, as_of: Any, view: Any) -> Any:
    """``as_of - ttl <= stamp <= as_of``, ``as_of`` a Column or a literal timestamp."""
    from pyspark.sql import functions as F

    condition = stamp <= as_of
    if view.ttl and view.ttl.total_seconds() > 0:
        condition = condition & (stamp >= as_of - F.expr(f"INTERVAL {int(view.ttl.total_seconds())} SECONDS"))
    return condition


def latest_rows_as_of(spark: Any, view: Any, as_of: pd.Timestamp, columns: list[str]) -> Any:
    """Spark twin of ``lookalike.snapshot.read_view_as_of``: latest row per customer in the window."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    source = _read_source(spark, view, columns)
    as_of_literal = F.lit(as_of.to_pydatetime()).cast("timestamp")
    inside = source.where(_window_condition(F.col(TIMESTAMP_COLUMN), as_of_literal, view))
    order = [F.col(TIMESTAMP_COLUMN).desc()]
    if CREATED_COLUMN in source.columns:
        order.append(F.col(CREATED_COLUMN).desc_nulls_last())
    ranked = inside.withColumn("_rank", F.row_number().over(Window.partitionBy(JOIN_KEY).orderBy(*order)))
    return ranked.where(F.col("_rank") == 1).select(JOIN_KEY, TIMESTAMP_COLUMN, *columns)


@dataclass
class AnchorEntities:
    """Opt-in, non-suppressed customers at the label date, as a cached Spark entity frame."""

    frame: Any  # pyspark DataFrame (customer_id, event_timestamp)
    count: int
    opted_in: int
    suppressed_excluded: int


def raise_no_anchors(label_ts: pd.Timestamp, opted_in: int, suppressed: int) -> None:
    raise DataValidationError(
        f"no opt-in customers with valid consent at {label_ts.date()} in the consent view's data "
        f"(found {opted_in} opted in, {suppressed} suppressed); check --label-date and "
        "that the consent_status table covers that date"
    )


def anchor_entities(spark: Any, store: Any, label_ts: pd.Timestamp, exclude_suppressed: bool) -> AnchorEntities:
    """The snapshot's entity frame, resolved in Spark; raises when no customer is left."""
    from pyspark.sql import functions as F

    consent_view = find_view_by_role(store, "consent")
    assert consent_view is not None  # required=True raises instead of returning None
    consent = latest_rows_as_of(spark, consent_view, label_ts, ["opt_in", "consent_valid_from"])
    as_of = F.lit(label_ts.to_pydatetime()).cast("timestamp")
    valid_from = F.col("consent_valid_from").cast("timestamp")
    opted_in = consent.where(
        F.coalesce(F.col("opt_in").cast("boolean"), F.lit(False)) & (valid_from.isNull() | (valid_from <= as_of))
    ).select(JOIN_KEY).cache()
    anchors = opted_in
    suppressed_count = 0
    suppression_view = find_view_by_role(store, "suppression", required=False)
    if exclude_suppressed and suppression_view is not None:
        suppressed = latest_rows_as_of(spark, suppression_view, label_ts, ["suppressed"]).where(
            F.coalesce(F.col("suppressed").cast("boolean"), F.lit(False))
        ).select(JOIN_KEY)
        suppressed_count = suppressed.count()
        anchors = opted_in.join(suppressed, JOIN_KEY, "left_anti")
    anchors = anchors.select(F.col(JOIN_KEY).cast("long").alias(JOIN_KEY), as_of.alias(TIMESTAMP_COLUMN)).cache()
    opted_count, anchor_count = opted_in.count(), anchors.count()
    if anchor_count == 0:
        raise_no_anchors(label_ts, opted_count, suppressed_count)
    return AnchorEntities(anchors, anchor_count, opted_count, opted_count - anchor_count)


def _rows_with_data(spark: Any, view: Any, entities: Any) -> int:
    """Entity rows with a source row of ``view`` inside its TTL window (the manifest's complement)."""
    from pyspark.sql import functions as F

    source = _read_source(spark, view, []).select(F.col(JOIN_KEY), F.col(TIMESTAMP_COLUMN).alias("_source_ts"))
    pairs = entities.join(source, JOIN_KEY, "inner")
    inside = pairs.where(_window_condition(F.col("_source_ts"), F.col(TIMESTAMP_COLUMN), view))
    return int(inside.select(JOIN_KEY, TIMESTAMP_COLUMN).distinct().count())


def _cast_column(spec_dtype: str, column: Any) -> Any:
    if spec_dtype in _NUMERIC:
        return column.cast("double")
    if spec_dtype == "Bool":
        return column.cast("boolean")
    if spec_dtype == "String":
        return column.cast("string")
    return column


def write_snapshot_data(
    store: Any,
    contract: FeatureContract,
    label_ts: pd.Timestamp,
    anchors: AnchorEntities,
    vocabulary_for: Any,
    out_dir: str | Path,
) -> tuple[SparkSnapshotStats, list[str]]:
    """Write ``out_dir`` (a Parquet directory of part files; a path or a URI Spark can write) from Spark.

    Returns stats + vocabulary.

    ``vocabulary_for(label_view, distinct_ids)`` returns the segment vocabulary; it calls
    ``distinct_ids()`` (every segment id in the label table up to the label date, computed by
    Spark) only when there is no segment catalog.
    """
    from pyspark.sql import functions as F

    spark = spark_session_for(store)
    entities, entity_count = anchors.frame, anchors.count
    service = store.get_feature_service(contract.service_name)
    projections = {p.name_to_use(): p for p in service.feature_view_projections}
    label_view = find_view_by_role(store, "labels")
    assert label_view is not None  # required=True raises instead of returning None
    label_field = label_view.features[0].name
    label_column = f"{label_view.name}__{label_field}"

    refs = [f"{store.get_feature_view(projections[f.view].name).name}:{f.name}" for f in contract.features]
    log.info("Spark point-in-time join of %d entity rows x %d features (%s)",
             entity_count, len(contract.columns), contract.service_name)
    job = store.get_historical_features(
        entity_df=cast(Any, entities), features=[*refs, f"{label_view.name}:{label_field}"], full_feature_names=True
    )
    joined = job.to_spark_df()
    absent = [c for c in [*contract.columns, label_column] if c not in joined.columns]
    if absent:
        raise DataValidationError(f"Feast returned no column(s) {absent[:10]}")

    segments = F.array_sort(F.transform(F.col(label_column), lambda s: s.cast("string")))
    data = joined.select(
        F.col(JOIN_KEY).cast("long").alias(JOIN_KEY),
        F.col(TIMESTAMP_COLUMN).cast("timestamp").alias(TIMESTAMP_COLUMN),
        *[_cast_column(spec.dtype, F.col(spec.column)).alias(spec.column) for spec in contract.features],
        F.coalesce(segments, F.array().cast("array<string>")).alias(SEGMENTS_COLUMN),
    ).dropDuplicates([JOIN_KEY, TIMESTAMP_COLUMN]).orderBy(JOIN_KEY).cache()

    def distinct_ids() -> list[str]:
        labels = _read_source(spark, label_view, [label_field])
        as_of = F.lit(label_ts.to_pydatetime()).cast("timestamp")
        exploded = labels.where(F.col(TIMESTAMP_COLUMN) <= as_of).select(F.explode(label_field).alias("segment"))
        return sorted(str(row[0]) for row in exploded.distinct().collect())

    vocabulary = vocabulary_for(label_view, distinct_ids)
    unknown_rows = (
        data.select(F.explode(SEGMENTS_COLUMN).alias("segment")).distinct()
        .where(~F.col("segment").isin(vocabulary)).orderBy("segment").limit(10).collect()
    )
    if unknown_rows:
        unknown = [row[0] for row in unknown_rows]
        raise DataValidationError(f"segment ids {unknown} in {label_view.name} are not in the segment catalog")

    row_count = data.count()
    missing = {view_name: entity_count - _rows_with_data(spark, store.get_feature_view(projections[view_name].name),
                                                         entities)
               for view_name in contract.views}
    without_segments = data.where(F.size(SEGMENTS_COLUMN) == 0).count()
    data.write.parquet(str(out_dir))
    data.unpersist()
    entities.unpersist()
    for view_name, count in missing.items():
        if count:
            log.warning("%d of %d entity rows have no %s row inside its TTL (null features kept)",
                        count, entity_count, view_name)
    stats = SparkSnapshotStats(
        row_count=row_count,
        customers_opted_in=anchors.opted_in,
        customers_suppressed_excluded=anchors.suppressed_excluded,
        customers_without_segments=without_segments,
        rows_missing_features=missing,
        rows_dropped_by_feast=entity_count - row_count,
    )
    return stats, vocabulary


__all__ = ["AnchorEntities", "SparkSnapshotStats", "anchor_entities", "raise_no_anchors", "uses_spark_offline_store", "write_snapshot_data"]
