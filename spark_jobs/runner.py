"""``lookalike features``: raw tables -> one Parquet dataset per feature table.

All tables for all snapshot dates are written by Spark's writer, validated (schema, keys,
uniqueness) and described by a manifest before they become current, so a failed run leaves
the previous good output untouched. A local ``out_dir`` is staged in a temporary directory
beside it and swapped in with one rename; a URI ``out_dir`` (``file://``, ``s3a://``,
``gs://``, ``hdfs://``) gets a fresh ``features.<run id>/`` and ``current.json`` is moved
last (``lookalike.uri_outputs``). Feast's sources and the snapshot resolve the pointer.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from tqdm import tqdm

from lookalike.artifacts import MANIFEST_NAME, atomic_dir, read_json, write_manifest
from lookalike.config import (
    IsoDate,
    Location,
    PositiveInt,
    cli_overrides,
    config_to_dict,
    load_config,
    stage_config,
)
from lookalike.errors import ConfigError, DataValidationError, LookalikeError
from lookalike.row_guard import check_row_drop
from lookalike.uri_outputs import child, exists, is_uri, pointer_swap, resolve
from lookalike.uri_outputs import read_manifest as read_uri_manifest
from lookalike.uri_outputs import write_manifest as write_uri_manifest
from spark_jobs import transforms as tf
from spark_jobs.validation import validate_output, validate_raw

log = logging.getLogger(__name__)

FEATURE_TABLES = tuple(tf.FEATURE_SCHEMAS)
# consent_status is validated before web_navigation, which is built from it, so a broken
# consent history is reported where it is, not downstream.
BUILD_ORDER = ("consent_status", *(t for t in FEATURE_TABLES if t != "consent_status"))
# Event tables are read only as far back as the longest window needs.
EVENT_TIME_COLUMNS = {"viewing_sessions": "start_ts", "mobile_usage": "usage_date", "navigation_events": "event_ts"}
# Raw tables that may legitimately be empty: nobody objected to profiling, or no customer
# consented to navigation tracking. Any other empty input means a broken extract.
MAY_BE_EMPTY = frozenset({"suppression", "navigation_events"})


@stage_config
class FeaturesConfig:
    raw_dir: Path = Path("data/raw")
    # A local directory (swapped in by rename) or a URI root (file://, s3a://, gs://, hdfs://):
    # each run then writes <out_dir>/features.<run id>/ and moves <out_dir>/current.json last.
    out_dir: Location = "data/features"
    start_date: IsoDate = "2026-11-08"
    end_date: IsoDate = "2026-11-22"
    frequency_days: PositiveInt = 7
    master: str = "local[2]"
    driver_memory: str = "4g"
    shuffle_partitions: PositiveInt = 8
    # Fail when a table's rows per snapshot date fall by more than this fraction below the
    # previous output's (1.0 accepts any drop).
    max_row_drop_fraction: float = 0.5

    def grid(self) -> tf.SnapshotGrid:
        try:
            start, end = date.fromisoformat(str(self.start_date)), date.fromisoformat(str(self.end_date))
        except ValueError as exc:
            raise ConfigError(f"start_date/end_date must be ISO dates: {exc}") from exc
        try:
            return tf.SnapshotGrid.between(start, end, self.frequency_days)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc


def _read_raw(spark: SparkSession, raw_dir: Path, table: str) -> DataFrame:
    path = raw_dir / f"{table}.parquet"
    if not path.exists():
        path = raw_dir / table
    if not path.exists():
        raise DataValidationError(
            f"table {table!r}: not found at {raw_dir / (table + '.parquet')} (run `lookalike datagen` first?)"
        )
    df = spark.read.parquet(str(path))
    validate_raw(table, df)
    if table not in MAY_BE_EMPTY and df.isEmpty():
        raise DataValidationError(f"table {table!r} at {path} is empty; refusing to build features from it "
                                  "(the previous feature tables are kept)")
    return df


def _since(df: DataFrame, column: str, since: date, until: date) -> DataFrame:
    """Rows with ``since <= column < until``: the only ones any window can reach."""
    return df.where(
        (F.col(column) >= F.lit(since.isoformat()).cast("timestamp"))
        & (F.col(column) < F.lit(until.isoformat()).cast("timestamp"))
    )


def build_tables(spark: SparkSession, raw_dir: Path, grid: tf.SnapshotGrid) -> dict[str, Callable[[], DataFrame]]:
    """Validated inputs, and a builder per feature table (lazy: nothing computed yet)."""
    raw = {name: _read_raw(spark, raw_dir, name) for name in (
        "customers", "consent", "suppression", "viewing_sessions", "devices", "mobile_usage",
        "tech_config", "navigation_events", "segment_assignments")}
    first, last = grid.dates[0], grid.dates[-1]
    since = first - timedelta(days=max(tf.WINDOWS_DAYS))
    for name, column in EVENT_TIME_COLUMNS.items():
        raw[name] = _since(raw[name], column, since, last)
    people = tf.population(raw["customers"], grid).cache()
    consent = tf.consent_status(raw["consent"], grid)
    return {
        "content_consumption": lambda: tf.content_consumption(raw["viewing_sessions"], people, grid),
        "devices": lambda: tf.devices(raw["devices"], people, grid),
        "profile": lambda: tf.profile(raw["customers"], grid),
        "mobile_roaming": lambda: tf.mobile_roaming(raw["mobile_usage"], people, grid),
        "tech_config": lambda: tf.tech_config(raw["tech_config"], grid),
        "web_navigation": lambda: tf.web_navigation(raw["navigation_events"], consent, grid),
        "segment_labels": lambda: tf.segment_labels(raw["segment_assignments"], grid),
        "consent_status": lambda: consent,
        "suppression_list": lambda: tf.suppression_list(raw["suppression"], people, grid),
    }


def run(config: FeaturesConfig, spark: SparkSession | None = None) -> dict[str, Path | str]:
    """Build every feature table for every snapshot date; returns ``{table: dataset dir or URI}``."""
    grid = config.grid()
    if spark is None:
        # Reuse a session someone else started (a notebook, the test suite) and leave it
        # running; stop only the one started here.
        spark = SparkSession.getActiveSession()
    owns_session = spark is None
    if spark is None:
        from spark_jobs.session import get_spark

        spark = get_spark(config.master, driver_memory=config.driver_memory,
                          shuffle_partitions=config.shuffle_partitions)
    else:
        spark.conf.set("spark.sql.shuffle.partitions", str(config.shuffle_partitions))
    created = datetime.now(timezone.utc).replace(microsecond=0)
    try:
        builders = build_tables(spark, Path(config.raw_dir), grid)
        if is_uri(config.out_dir):
            with pointer_swap(str(config.out_dir), "features") as generation:
                _write_tables(spark, builders, generation.uri, config, grid, created, _previous_manifest(config.out_dir))
                generation.fields["snapshot_dates"] = [d.isoformat() for d in grid.dates]
            return {table: child(generation.uri, table) for table in FEATURE_TABLES}
        out_dir = Path(config.out_dir)
        with atomic_dir(out_dir) as tmp:
            _write_tables(spark, builders, str(tmp), config, grid, created, _previous_manifest(out_dir))
    finally:
        if owns_session:
            spark.stop()
    return {table: out_dir / table for table in FEATURE_TABLES}


def _write_tables(spark: SparkSession, builders: dict[str, Callable[[], DataFrame]], target: str,
                  config: FeaturesConfig, grid: tf.SnapshotGrid, created: datetime,
                  previous: dict[str, Any] | None) -> None:
    """Write, read back and validate every table under ``target``, then its manifest (last)."""
    timings: dict[str, float] = {}
    row_counts: dict[str, int] = {}
    for table in (bar := tqdm(BUILD_ORDER, desc="features", unit="table")):
        bar.set_postfix_str(table)
        started = time.perf_counter()
        df = builders[table]().withColumn(tf.CREATED_TS, F.lit(created).cast("timestamp"))
        # Spark's own writer, to a local path or a URI (file://, s3a://, gs://, hdfs://).
        df.write.mode("overwrite").parquet(child(target, table))
        written = spark.read.parquet(child(target, table))
        validate_output(table, written, tf.FEATURE_SCHEMAS[table])
        row_counts[table] = written.count()
        timings[table] = round(time.perf_counter() - started, 2)
        log.info("features: %s %s rows in %.1fs", table, f"{row_counts[table]:,}", timings[table])
    _check_row_drops(previous, row_counts, len(grid.dates), config.max_row_drop_fraction)
    fields: dict[str, Any] = dict(
        snapshot_dates=[d.isoformat() for d in grid.dates],
        tables={t: {"rows": row_counts[t], "features": tf.FEATURE_SCHEMAS[t],
                    "legitimate_interest": t in tf.LEGITIMATE_INTEREST_TABLES} for t in FEATURE_TABLES},
        created_timestamp=created.isoformat(), seconds=timings,
        config=config_to_dict(config),
    )
    if is_uri(target):
        write_uri_manifest(target, "feature_tables", **fields)
    else:
        write_manifest(target, "feature_tables", **fields)


def _previous_manifest(out: str | Path) -> dict[str, Any] | None:
    """The manifest of the output a run would replace (through the pointer for URIs); None without one."""
    try:
        if is_uri(out):
            return read_uri_manifest(resolve(str(out))) if exists(str(out)) else None
        return dict(read_json(Path(out) / MANIFEST_NAME))
    except LookalikeError:
        return None  # no previous output (or an unreadable one, which this run replaces)


def _check_row_drops(previous: dict[str, Any] | str | Path | None, rows: dict[str, int], n_dates: int,
                     max_fraction: float) -> None:
    """Rows per snapshot date of every table against the previous output's (its manifest, or its location)."""
    if isinstance(previous, (str, Path)):
        previous = _previous_manifest(previous)
    if previous is None:
        return
    previous_dates = max(len(previous.get("snapshot_dates") or []), 1)
    for table, count in rows.items():
        before = (previous.get("tables") or {}).get(table, {}).get("rows")
        check_row_drop(f"feature table {table!r}", before / previous_dates if before is not None else None,
                       count / max(n_dates, 1), max_fraction)


def add_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config (e.g. configs/features.yaml)")
    parser.add_argument("--raw-dir", help="raw tables directory (datagen output)")
    parser.add_argument("--out-dir", help="feature tables output: a directory or a URI root (file://, s3a://, ...)")
    parser.add_argument("--start-date", help="first snapshot date (ISO)")
    parser.add_argument("--end-date", help="last snapshot date (ISO)")
    parser.add_argument("--master", help="Spark master, e.g. local[2] or spark://host:7077")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")

    def _run(args: argparse.Namespace) -> int:
        overrides = cli_overrides(args, ["raw_dir", "out_dir", "start_date", "end_date", "master"])
        config = load_config(FeaturesConfig, args.config, overrides)
        for table, path in run(config).items():
            print(f"{table}\t{path}")
        return 0

    parser.set_defaults(func=_run)
