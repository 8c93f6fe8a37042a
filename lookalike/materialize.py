"""Load the latest feature values into the online store (``lookalike materialize``).

Semantics are Feast's ``materialize-incremental``: for every online view, the latest row
per customer with ``start < event_timestamp <= end`` is written, where ``start`` is the
end of the view's last materialization INTO THIS ONLINE STORE (or ``end - ttl`` the first
time; :mod:`lookalike.materialization_progress` keeps the mark inside the store itself, so
a fresh Redis beside an already loaded SQLite gets the full load). A view already loaded up
to ``end`` or later is skipped ("nothing to do"). The interval is also recorded in the
registry for Feast's own tools. Only the model-input views (legitimate interest,
through the privacy guard) and the ``consent`` / ``suppression`` status views go online;
navigation and labels never do, whatever their ``online`` flag says.

Engines: ``feast`` calls ``FeatureStore.materialize`` (per-row protos, ~1.6k rows/s into
Redis); ``fast`` (default for Redis) writes the same hash layout with
:mod:`lookalike.redis_loader` (vectorised encoding, sent through redis-py: single node,
``rediss://`` TLS, sentinel or cluster). SQLite always uses Feast's engine.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from tqdm import tqdm

from lookalike.config import IsoDate, PositiveInt, cli_overrides, load_config, stage_config
from lookalike.contract import JOIN_KEY, LEGITIMATE_INTEREST, ROLE_TAG, find_model_service, load_contract
from lookalike.errors import ConfigError, DataValidationError
from lookalike.feast_utils import open_store
from lookalike.materialization_progress import MaterializationProgress
from lookalike.snapshot import TIMESTAMP_COLUMN, parse_date

log = logging.getLogger(__name__)

Engine = Literal["auto", "fast", "feast"]
ENGINES: tuple[str, ...] = get_args(Engine)
STATUS_ROLES = ("consent", "suppression")


@stage_config
class MaterializeConfig:
    repo: Path = Path("feature_repo")
    # Upper bound of event timestamps to load (YYYY-MM-DD or ISO); None: now.
    end_date: IsoDate | None = None
    # None: incremental (since the last materialization, else end - ttl).
    start_date: IsoDate | None = None
    # None: the store configured in the repo's feature_store.yaml.
    online: Literal["sqlite", "redis"] | None = None
    # online=redis: Feast's host:port[,db=N] or a URL (redis://, rediss://, redis+cluster://,
    # redis+sentinel://; lookalike.redis_target); None: $LOOKALIKE_REDIS_URL.
    redis_connection: str | None = None
    engine: Engine = "auto"
    chunk_rows: PositiveInt = 20_000
    views: list[str] = field(default_factory=list)


@dataclass
class ViewLoad:
    view: str
    legal_basis: str
    rows: int
    start: str
    end: str
    seconds: float


@dataclass
class MaterializeReport:
    online_store: str
    engine: str
    views: list[ViewLoad]
    # views already loaded up to the requested end (or later): view -> how far
    up_to_date: dict[str, str] = field(default_factory=dict)

    @property
    def nothing_to_do(self) -> bool:
        return not self.views and bool(self.up_to_date)

    @property
    def rows(self) -> int:
        return sum(v.rows for v in self.views)


def online_views(store: Any, service_name: str | None = None) -> list[Any]:
    """Views allowed online: the guarded model-input views plus consent/suppression status."""
    service_name = service_name or find_model_service(store)
    contract = load_contract(store, service_name)
    allowed = set(contract.views)
    views = []
    for view in store.list_feature_views():
        role = (view.tags or {}).get(ROLE_TAG)
        if view.name in allowed or role in STATUS_ROLES:
            views.append(view)
        elif view.online:
            log.info("not materializing %s (legal_basis=%s): not a model input or status view",
                     view.name, (view.tags or {}).get("legal_basis"))
    return sorted(views, key=lambda v: v.name)


def _window_start(progress: MaterializationProgress, view: Any, end: datetime, start: datetime | None) -> datetime:
    if start is not None:
        return start
    loaded_to = progress.get(view.name)
    if loaded_to is not None:
        return loaded_to
    ttl = view.ttl if view.ttl and view.ttl.total_seconds() > 0 else timedelta(days=3650)
    return end - ttl


def latest_rows(view: Any, start: datetime, end: datetime) -> pa.Table:
    """Latest row per customer of the view's source with ``start < event_timestamp <= end``."""
    path = getattr(view.batch_source, "path", None)
    if not path or not Path(path).exists():
        raise DataValidationError(f"feature table for view {view.name!r} not found at {path}")
    dataset = ds.dataset(path, format="parquet")
    created = "created_timestamp" if "created_timestamp" in dataset.schema.names else None
    columns = [JOIN_KEY, TIMESTAMP_COLUMN] + ([created] if created else []) + [f.name for f in view.features]
    missing = [c for c in columns if c not in dataset.schema.names]
    if missing:
        raise DataValidationError(f"feature table {path} (view {view.name!r}) lacks column(s) {missing}")
    stamp_type = pa.timestamp("us", "UTC")
    condition = (ds.field(TIMESTAMP_COLUMN) > pa.scalar(start, stamp_type)) & (
        ds.field(TIMESTAMP_COLUMN) <= pa.scalar(end, stamp_type)
    )
    table = dataset.to_table(columns=columns, filter=condition)
    if table.num_rows == 0:
        return table
    ids = table.column(JOIN_KEY).to_numpy()
    stamps = pc.cast(table.column(TIMESTAMP_COLUMN), pa.int64()).to_numpy()
    created_stamps = pc.cast(table.column(created), pa.int64()).fill_null(0).to_numpy() if created else None
    order = np.lexsort(_sort_keys(ids, stamps, created_stamps))
    sorted_ids = ids[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = sorted_ids[:-1] != sorted_ids[1:]
    return table.take(pa.array(order[last]))


def _sort_keys(ids: np.ndarray, stamps: np.ndarray, created: np.ndarray | None) -> tuple[np.ndarray, ...]:
    # np.lexsort sorts by the LAST key first: customer, then event time, then created time.
    return (created, stamps, ids) if created is not None else (stamps, ids)


def _fast_load(store: Any, view: Any, table: pa.Table, writer: Any, chunk_rows: int) -> int:
    from lookalike.redis_loader import encode_timestamps, encode_values, field_hash, redis_keys

    project = store.project
    for start in tqdm(range(0, table.num_rows, chunk_rows), desc=f"redis {view.name}", unit="chunk",
                      leave=False, disable=table.num_rows <= chunk_rows):
        chunk = table.slice(start, chunk_rows)
        keys = redis_keys(chunk.column(JOIN_KEY).to_numpy(), project)
        fields = [
            (field_hash(view.name, f.name), encode_values(chunk.column(f.name), str(f.dtype)))
            for f in view.features
        ]
        fields.append((f"_ts:{view.name}".encode(), encode_timestamps(chunk.column(TIMESTAMP_COLUMN))))
        writer.write(keys, fields)
    return table.num_rows


def _online_type(store: Any) -> str:
    return str(store.config.online_store.type)


def _store_for(config: MaterializeConfig) -> Any:
    from lookalike.feast_utils import open_store_with_online

    if config.online is None:
        return open_store(config.repo)
    return open_store_with_online(config.repo, config.online, config.redis_connection)


def run(config: MaterializeConfig) -> MaterializeReport:
    store = _store_for(config)
    online_type = _online_type(store)
    engine = config.engine
    if engine == "auto":
        engine = "fast" if online_type == "redis" else "feast"
    if engine == "fast" and online_type != "redis":
        raise ConfigError(f"engine=fast writes Redis only; the repo's online store is {online_type}")
    end = parse_date(config.end_date, "end_date").to_pydatetime() if config.end_date else pd.Timestamp.now(tz="UTC").to_pydatetime()
    start = parse_date(config.start_date, "start_date").to_pydatetime() if config.start_date else None

    views = online_views(store)
    if config.views:
        unknown = sorted(set(config.views) - {v.name for v in views})
        if unknown:
            raise ConfigError(f"view(s) {unknown} are not allowed online; allowed: {[v.name for v in views]}")
        views = [v for v in views if v.name in config.views]

    writer = None
    if engine == "fast":
        from lookalike.redis_loader import BulkWriter
        from lookalike.redis_target import RedisTarget

        writer = BulkWriter(RedisTarget.from_store(store))
    progress = MaterializationProgress(store)
    loads: list[ViewLoad] = []
    up_to_date: dict[str, str] = {}
    try:
        for view in views:
            window_start = _window_start(progress, view, end, start)
            if window_start >= end:
                up_to_date[view.name] = window_start.isoformat()
                log.info("%s: nothing to do, already materialized up to %s (end %s)", view.name,
                         window_start.isoformat(), end.isoformat())
                continue
            began = time.perf_counter()
            if engine == "feast":
                rows = latest_rows(view, window_start, end).num_rows
                store.materialize(start_date=window_start, end_date=end, feature_views=[view.name])
            else:
                table = latest_rows(view, window_start, end)
                rows = _fast_load(store, view, table, writer, config.chunk_rows)
                store.registry.apply_materialization(view, store.project, window_start, end)
            progress.set(view.name, end)
            elapsed = time.perf_counter() - began
            loads.append(ViewLoad(view.name, (view.tags or {}).get("legal_basis", "?"), rows,
                                  window_start.isoformat(), end.isoformat(), round(elapsed, 3)))
            log.info("materialized %s (%s) into %s with %s: %s rows in %.1fs", view.name,
                     loads[-1].legal_basis, online_type, engine, rows, elapsed)
    finally:
        if writer is not None:
            writer.close()
    for load in loads:
        if load.legal_basis != LEGITIMATE_INTEREST:
            log.info("%s is online under legal_basis=%s (status lookups for serving only)", load.view, load.legal_basis)
    return MaterializeReport(online_store=online_type, engine=engine, views=loads, up_to_date=up_to_date)


def add_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config")
    parser.add_argument("--repo", type=Path, help="applied Feast repo (default feature_repo)")
    parser.add_argument("--end-date", help="load rows up to this date (default now)")
    parser.add_argument("--start-date", help="load rows after this date (default: incremental)")
    parser.add_argument("--online", choices=("sqlite", "redis"), help="online store (default: the repo's)")
    parser.add_argument("--redis", dest="redis_connection", help="host:port or redis[s][+cluster|+sentinel]:// URL (default $LOOKALIKE_REDIS_URL)")
    parser.add_argument("--engine", choices=ENGINES, help="fast (Redis bulk loader) or feast (plain Feast)")
    parser.add_argument("--plain-feast", action="store_true", help="same as --engine feast")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")

    def main(args: argparse.Namespace) -> int:
        if args.plain_feast:
            args.engine = "feast"
        overrides = cli_overrides(args, ["repo", "end_date", "start_date", "online", "redis_connection", "engine"])
        report = run(load_config(MaterializeConfig, args.config, overrides))
        if report.nothing_to_do:
            latest = max(report.up_to_date.values())
            print(f"nothing to do: every online view is already materialized up to {latest} "
                  f"(use --start-date to reload a window)")
            return 0
        for load in report.views:
            print(f"{load.view:22s} {load.legal_basis:20s} rows={load.rows:>9d} {load.seconds:8.2f}s")
        return 0

    parser.set_defaults(func=main)
