"""Point-in-time training snapshots from the Feast offline store.

A snapshot at label date ``D`` holds, for every opt-in customer whose consent was valid at
``D`` (and who has not objected to profiling), the model-input features as Feast's
point-in-time join sees them at ``D`` and the segments held at ``D``. Nothing dated after
``D`` can enter: the entity timestamp is ``D`` and Feast only joins rows with
``event_timestamp <= D`` inside each view's TTL.

The file offline store may silently drop entity rows that have no feature row in a view's
TTL window, and customers missing from a view get nulls. Both are counted per view,
logged and written to the manifest; the customers are kept (left join onto the entity
frame), with nulls where they had no row.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from lookalike.artifacts import atomic_dir, write_manifest
from lookalike.config import IsoDate, Location, cli_overrides, config_to_dict, load_config, stage_config
from lookalike.contract import (
    JOIN_KEY,
    FeatureContract,
    cast_to_contract,
    find_model_service,
    find_view_by_role,
    load_contract,
)
from lookalike.errors import ConfigError, DataValidationError
from lookalike.feast_utils import applied_repo_path, open_store
from lookalike.snapshot_spark import (
    AnchorEntities,
    anchor_entities,
    raise_no_anchors,
    spark_session_for,
    uses_spark_offline_store,
    write_snapshot_data,
)
from lookalike.storage import POINTER, filesystem
from lookalike.uri_outputs import child, exists, is_uri, parquet_dataset, pointer_swap
from lookalike.uri_outputs import write_manifest as write_uri_manifest

log = logging.getLogger(__name__)

TIMESTAMP_COLUMN = "event_timestamp"
SNAPSHOT_KIND = "training_snapshot"
SNAPSHOT_DATA = "data.parquet"  # a file (local path) or a directory of part files (Spark)
MISSING_ROWS_ATTR = "rows_missing_features"
DROPPED_ROWS_ATTR = "rows_dropped_by_feast"


@stage_config
class SnapshotConfig:
    repo: Path = Path("feature_repo")
    label_date: IsoDate = ""
    # A local directory or a URI root (file://, s3a://, gs://, hdfs://; pointer-swapped, see run()).
    out: Location = "artifacts/snapshots"
    # None: the one feature service tagged lookalike_role=model_input.
    feature_service: str | None = None
    # Raw segment catalog (segment_id column); None: <data>/../raw/segment_catalog.parquet when
    # present, else every segment id found in the label table up to the label date.
    segment_catalog: Path | None = None
    exclude_suppressed: bool = True


def parse_date(value: str, what: str = "date") -> pd.Timestamp:
    """``YYYY-MM-DD`` (or ISO datetime) as a UTC timestamp; naive values are taken as UTC."""
    if not value:
        raise ConfigError(f"{what} is required (YYYY-MM-DD)")
    try:
        stamp = pd.Timestamp(value)
    except ValueError as exc:
        raise ConfigError(f"{what} {value!r} is not a date (YYYY-MM-DD)") from exc
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _source_path(view: Any) -> str:
    path = getattr(view.batch_source, "path", None)
    if not path:
        raise ConfigError(f"feature view {view.name!r} has no file path source")
    return str(path)


def read_view_as_of(view: Any, as_of: pd.Timestamp, columns: list[str] | None = None) -> pd.DataFrame:
    """Latest row per customer of ``view``'s source with ``as_of - ttl <= event_timestamp <= as_of``.

    The same window Feast's point-in-time join uses; for reading status views (consent,
    suppression, labels vocabulary) for ALL customers, which Feast cannot enumerate.
    """
    path = _source_path(view)
    if not exists(path):
        raise DataValidationError(f"feature table for view {view.name!r} not found at {path}")
    dataset = parquet_dataset(path)
    names = dataset.schema.names
    wanted = [JOIN_KEY, TIMESTAMP_COLUMN] + [c for c in (columns or []) if c not in (JOIN_KEY, TIMESTAMP_COLUMN)]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataValidationError(f"feature table {path} (view {view.name!r}) lacks column(s) {missing}")
    created = "created_timestamp" if "created_timestamp" in names else None
    as_of_py = as_of.to_pydatetime()
    condition = ds.field(TIMESTAMP_COLUMN) <= pa.scalar(as_of_py, pa.timestamp("us", "UTC"))
    if view.ttl and view.ttl.total_seconds() > 0:
        start = as_of_py - view.ttl
        condition = condition & (ds.field(TIMESTAMP_COLUMN) >= pa.scalar(start, pa.timestamp("us", "UTC")))
    table = dataset.to_table(columns=wanted + ([created] if created else []), filter=condition)
    frame = table.to_pandas()
    order = [TIMESTAMP_COLUMN] + ([created] if created else [])
    frame = frame.sort_values(order).drop_duplicates(JOIN_KEY, keep="last")
    return frame[wanted].reset_index(drop=True)


def _normalise_entity_df(entity_df: pd.DataFrame) -> pd.DataFrame:
    for column in (JOIN_KEY, TIMESTAMP_COLUMN):
        if column not in entity_df.columns:
            raise DataValidationError(f"entity frame lacks column {column!r}")
    frame = entity_df[[JOIN_KEY, TIMESTAMP_COLUMN]].copy()
    frame[JOIN_KEY] = frame[JOIN_KEY].astype("int64")
    stamps = pd.to_datetime(frame[TIMESTAMP_COLUMN])
    frame[TIMESTAMP_COLUMN] = (stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC"))
    return frame.drop_duplicates().reset_index(drop=True)


def _rows_with_data(view: Any, entities: pd.DataFrame) -> np.ndarray:
    """Mask of entity rows that have a source row of ``view`` inside its TTL window.

    Feast's file offline store either drops such rows or fails on the nulls they produce
    (Dask cannot index a null ``created_timestamp``), so they are never sent to it.
    """
    path = _source_path(view)
    if not exists(path):
        raise DataValidationError(f"feature table for view {view.name!r} not found at {path}")
    stamp_type = pa.timestamp("us", "UTC")
    latest = entities[TIMESTAMP_COLUMN].max().to_pydatetime()
    condition = ds.field(TIMESTAMP_COLUMN) <= pa.scalar(latest, stamp_type)
    ttl = view.ttl if view.ttl and view.ttl.total_seconds() > 0 else None
    if ttl is not None:
        earliest = entities[TIMESTAMP_COLUMN].min().to_pydatetime() - ttl
        condition = condition & (ds.field(TIMESTAMP_COLUMN) >= pa.scalar(earliest, stamp_type))
    keys = parquet_dataset(path).to_table(columns=[JOIN_KEY, TIMESTAMP_COLUMN], filter=condition)
    source = keys.to_pandas().rename(columns={TIMESTAMP_COLUMN: "_source_ts"})
    source["_source_ts"] = pd.to_datetime(source["_source_ts"], utc=True)
    indexed = entities.reset_index(names="_row")
    pairs = indexed.merge(source, on=JOIN_KEY, how="inner")
    inside = pairs["_source_ts"] <= pairs[TIMESTAMP_COLUMN]
    if ttl is not None:
        inside &= pairs["_source_ts"] >= pairs[TIMESTAMP_COLUMN] - ttl
    mask = np.zeros(len(entities), dtype=bool)
    mask[pairs.loc[inside, "_row"].unique()] = True
    return mask


def build_point_in_time_features(store: Any, contract: FeatureContract, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Contract features of ``entity_df`` rows (customer_id, event_timestamp) via Feast's PIT join.

    Returns one row per distinct entity row, in ``entity_df`` order: ``customer_id``,
    ``event_timestamp`` and every contract column (nulls where the customer had no row
    inside a view's TTL). ``result.attrs["rows_missing_features"]`` counts those rows per
    view; ``result.attrs["rows_dropped_by_feast"]`` counts rows Feast's offline store left
    out of its answer although they had data (kept here with nulls; expected 0).

    The guarded service is fetched one view at a time, each with only the entity rows that
    have a row of that view inside its TTL, because the file offline store silently drops
    (or fails on) rows without one.
    """
    entities = _normalise_entity_df(entity_df)
    if entities.empty:
        raise DataValidationError("entity frame is empty: no customers to fetch features for")
    service = store.get_feature_service(contract.service_name)
    projections = {p.name_to_use(): p for p in service.feature_view_projections}
    log.info("point-in-time join of %d entity rows x %d features (%s)",
             len(entities), len(contract.columns), contract.service_name)
    merged = entities.copy()
    missing: dict[str, int] = {}
    dropped = 0
    for view_name in contract.views:
        view_columns = [f.column for f in contract.features if f.view == view_name]
        view = store.get_feature_view(projections[view_name].name)
        has_data = _rows_with_data(view, entities)
        missing[view_name] = int((~has_data).sum())
        part = pd.DataFrame(columns=[JOIN_KEY, TIMESTAMP_COLUMN, *view_columns])
        if has_data.any():
            refs = [f"{view.name}:{f.name}" for f in contract.features if f.view == view_name]
            fetched = store.get_historical_features(
                entity_df=entities[has_data].reset_index(drop=True), features=refs, full_feature_names=True
            ).to_df()
            fetched[TIMESTAMP_COLUMN] = pd.to_datetime(fetched[TIMESTAMP_COLUMN], utc=True)
            absent = [c for c in view_columns if c not in fetched.columns]
            if absent:
                raise DataValidationError(f"Feast returned no column(s) {absent} for view {view_name!r}")
            part = fetched[[JOIN_KEY, TIMESTAMP_COLUMN, *view_columns]].drop_duplicates([JOIN_KEY, TIMESTAMP_COLUMN])
            dropped += int(has_data.sum()) - len(part)
        merged = merged.merge(part, on=[JOIN_KEY, TIMESTAMP_COLUMN], how="left")
    merged = cast_to_contract(merged[[JOIN_KEY, TIMESTAMP_COLUMN, *contract.columns]].copy(), contract)

    if dropped:
        log.warning("Feast's offline store dropped %d entity rows that had data (kept with null features)", dropped)
    for view_name, count in missing.items():
        if count:
            log.warning("%d of %d entity rows have no %s row inside its TTL (null features kept)",
                        count, len(entities), view_name)
    merged.attrs[MISSING_ROWS_ATTR] = missing
    merged.attrs[DROPPED_ROWS_ATTR] = dropped
    return merged


def opted_in_customers(store: Any, as_of: pd.Timestamp) -> np.ndarray:
    """Customers whose consent is valid at ``as_of`` per the consent view's latest row in its TTL."""
    view = find_view_by_role(store, "consent")
    assert view is not None  # required=True raises instead of returning None
    status = read_view_as_of(view, as_of, ["opt_in", "consent_valid_from"])
    valid_from = pd.to_datetime(status["consent_valid_from"], utc=True)
    valid = status["opt_in"].fillna(False).astype(bool) & (valid_from.isna() | (valid_from <= as_of))
    return np.sort(status.loc[valid, JOIN_KEY].to_numpy(dtype=np.int64))


def suppressed_customers(store: Any, as_of: pd.Timestamp) -> np.ndarray:
    view = find_view_by_role(store, "suppression", required=False)
    if view is None:
        return np.array([], dtype=np.int64)
    status = read_view_as_of(view, as_of, ["suppressed"])
    return np.sort(status.loc[status["suppressed"].fillna(False).astype(bool), JOIN_KEY].to_numpy(dtype=np.int64))


def _labels_as_of(store: Any, entities: pd.DataFrame) -> tuple[pd.Series, Any]:
    view = find_view_by_role(store, "labels")
    assert view is not None  # required=True raises instead of returning None
    field = view.features[0].name
    column = f"{view.name}__{field}"
    has_labels = _rows_with_data(view, entities)
    fetched = pd.DataFrame(columns=[JOIN_KEY, TIMESTAMP_COLUMN, column])
    if has_labels.any():
        fetched = store.get_historical_features(
            entity_df=entities[has_labels].reset_index(drop=True), features=[f"{view.name}:{field}"],
            full_feature_names=True,
        ).to_df()
        fetched[TIMESTAMP_COLUMN] = pd.to_datetime(fetched[TIMESTAMP_COLUMN], utc=True)
    merged = entities.merge(fetched[[JOIN_KEY, TIMESTAMP_COLUMN, column]], on=[JOIN_KEY, TIMESTAMP_COLUMN], how="left")
    labels = merged[column].map(lambda v: sorted(str(s) for s in v) if v is not None and not _is_nan(v) else [])
    return labels, view


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def catalog_segment_ids(label_view: Any, catalog: Path | None) -> list[str] | None:
    """Sorted segment ids of ``catalog`` (or ``<data>/../raw/segment_catalog.parquet``); None without one."""
    source = _source_path(label_view)
    if catalog is None and not is_uri(source):
        tables = Path(source).parent
        if (tables.parent / POINTER).is_file():  # <data>/features.<run id>/<table>, behind a pointer
            tables = tables.parent
        guess = tables.parent / "raw" / "segment_catalog.parquet"
        catalog = guess if guess.exists() else None
    if catalog is None:
        return None
    if not Path(catalog).exists():
        raise DataValidationError(f"segment catalog not found: {catalog}")
    table = pq.read_table(catalog)
    if "segment_id" not in table.column_names:
        raise DataValidationError(f"segment catalog {catalog} lacks column 'segment_id'")
    return sorted({str(s) for s in table.column("segment_id").to_pylist()})


def segment_vocabulary(store: Any, label_view: Any, as_of: pd.Timestamp, catalog: Path | None) -> list[str]:
    from_catalog = catalog_segment_ids(label_view, catalog)
    if from_catalog is not None:
        return from_catalog
    field = label_view.features[0].name
    dataset = parquet_dataset(_source_path(label_view))
    table = dataset.to_table(
        columns=[field],
        filter=ds.field(TIMESTAMP_COLUMN) <= pa.scalar(as_of.to_pydatetime(), pa.timestamp("us", "UTC")),
    )
    return sorted({str(s) for s in pc.list_flatten(table.column(field)).to_pylist()})


def run(config: SnapshotConfig) -> Path | str:
    """Build ``<out>/<service>/<label_date>/`` (data.parquet + manifest.json); returns where it is.

    A local ``out`` is staged beside the target and renamed into place. A URI ``out``
    (``file://``, ``s3a://``, ``gs://``, ``hdfs://``) gets a fresh
    ``<out>/<service>/<label_date>/snapshot.<run id>/``, returned, and the date directory's
    ``current.json`` is moved to it only after the data and the manifest are complete.
    With Feast's Spark offline store, ``data.parquet`` is a directory of part files written
    by Spark (``lookalike.snapshot_spark``) straight to the target; otherwise one file
    written here.
    """
    label_ts = parse_date(config.label_date, "label_date")
    store = open_store(config.repo)
    service_name = config.feature_service or find_model_service(store)
    contract = load_contract(store, service_name)  # the privacy guard, before reading any value
    # Who is in is settled (and an empty population refused) before anything is created.
    if uses_spark_offline_store(store):
        spark_anchors = anchor_entities(spark_session_for(store), store, label_ts, config.exclude_suppressed)
    else:
        local_anchors = _local_anchors(store, label_ts, config.exclude_suppressed)

    def write_data(target: str | Path) -> dict[str, Any]:
        if uses_spark_offline_store(store):
            counts = _write_data_with_spark(store, contract, label_ts, config, spark_anchors, target)
        else:
            counts = _write_data_locally(store, contract, label_ts, config, local_anchors, target)
        return dict(feature_service=contract.service_name, feature_service_version=contract.service_version,
                    contract=contract.to_dict(), label_date=label_ts.date().isoformat(),
                    feature_repo=str(applied_repo_path(store)), **counts, config=config_to_dict(config))

    date_dir = label_ts.date().isoformat()
    final: Path | str
    if is_uri(config.out):
        with pointer_swap(child(config.out, service_name, date_dir), "snapshot") as generation:
            manifest = write_uri_manifest(generation.uri, SNAPSHOT_KIND,
                                          **write_data(child(generation.uri, SNAPSHOT_DATA)))
            generation.fields.update(content_hash=manifest["content_hash"], row_count=manifest["row_count"])
        final = generation.uri
    else:
        final = Path(config.out) / service_name / date_dir
        with atomic_dir(final) as tmp:
            manifest = write_manifest(tmp, SNAPSHOT_KIND, **write_data(tmp / SNAPSHOT_DATA))
    log.info("snapshot %s: %d customers, %d features, missing per view %s, hash %s",
             final, manifest["row_count"], len(contract.columns), manifest["rows_missing_features"],
             manifest["content_hash"][:12])
    return final


def _write_data_with_spark(
    store: Any, contract: FeatureContract, label_ts: pd.Timestamp, config: SnapshotConfig, anchors: AnchorEntities,
    out: str | Path,
) -> dict[str, Any]:
    def vocabulary_for(label_view: Any, distinct_ids: Any) -> list[str]:
        from_catalog = catalog_segment_ids(label_view, config.segment_catalog)
        return from_catalog if from_catalog is not None else list(distinct_ids())

    stats, vocabulary = write_snapshot_data(store, contract, label_ts, anchors, vocabulary_for, out)
    return {
        "row_count": stats.row_count,
        "rows_missing_features": stats.rows_missing_features,
        "rows_dropped_by_feast": stats.rows_dropped_by_feast,
        "customers_opted_in": stats.customers_opted_in,
        "customers_suppressed_excluded": stats.customers_suppressed_excluded,
        "customers_without_segments": stats.customers_without_segments,
        "segment_vocabulary": vocabulary,
        "written_by": "spark",
    }


def _local_anchors(store: Any, label_ts: pd.Timestamp, exclude_suppressed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(opted-in ids, suppressed ids) at ``label_ts``; raises when no customer is left."""
    opted_in = opted_in_customers(store, label_ts)
    suppressed = suppressed_customers(store, label_ts) if exclude_suppressed else np.array([], np.int64)
    if len(np.setdiff1d(opted_in, suppressed)) == 0:
        raise_no_anchors(label_ts, len(opted_in), len(suppressed))
    return opted_in, suppressed


def _write_data_locally(
    store: Any, contract: FeatureContract, label_ts: pd.Timestamp, config: SnapshotConfig,
    status: tuple[np.ndarray, np.ndarray], out: str | Path,
) -> dict[str, Any]:
    opted_in, suppressed = status
    anchors = np.setdiff1d(opted_in, suppressed)
    entities = pd.DataFrame({JOIN_KEY: anchors, TIMESTAMP_COLUMN: label_ts})
    features = build_point_in_time_features(store, contract, entities)
    labels, label_view = _labels_as_of(store, features[[JOIN_KEY, TIMESTAMP_COLUMN]])
    features["segments"] = labels.to_numpy()
    vocabulary = segment_vocabulary(store, label_view, label_ts, config.segment_catalog)
    unknown = sorted({s for row in features["segments"] for s in row} - set(vocabulary))
    if unknown:
        raise DataValidationError(f"segment ids {unknown[:10]} in {label_view.name} are not in the segment catalog")

    table = pa.Table.from_pandas(features, preserve_index=False)
    table = table.set_column(
        table.schema.get_field_index(TIMESTAMP_COLUMN), TIMESTAMP_COLUMN,
        table.column(TIMESTAMP_COLUMN).cast(pa.timestamp("us", "UTC")),
    )
    if is_uri(out):
        fs, path = filesystem(out)
        pq.write_table(table.replace_schema_metadata(None), path, filesystem=fs)
    else:
        pq.write_table(table.replace_schema_metadata(None), out)
    return {
        "row_count": len(features),
        "rows_missing_features": features.attrs[MISSING_ROWS_ATTR],
        "rows_dropped_by_feast": features.attrs[DROPPED_ROWS_ATTR],
        "customers_opted_in": int(len(opted_in)),
        "customers_suppressed_excluded": int(len(np.intersect1d(opted_in, suppressed))),
        "customers_without_segments": int(sum(1 for row in features["segments"] if not row)),
        "segment_vocabulary": vocabulary,
    }


def add_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config (configs/snapshot.yaml)")
    parser.add_argument("--repo", type=Path, help="applied Feast repo (default feature_repo)")
    parser.add_argument("--label-date", help="label date YYYY-MM-DD")
    parser.add_argument("--out", help="output root: a directory or a URI (default artifacts/snapshots)")
    parser.add_argument("--feature-service", help="feature service (default: the model_input one)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")

    def main(args: argparse.Namespace) -> int:
        overrides = cli_overrides(args, ["repo", "label_date", "out", "feature_service"])
        config = load_config(SnapshotConfig, args.config, overrides)
        path = run(config)
        print(path)
        return 0

    parser.set_defaults(func=main)


__all__ = [
    "SnapshotConfig",
    "build_point_in_time_features",
    "opted_in_customers",
    "read_view_as_of",
    "run",
    "suppressed_customers",
]
