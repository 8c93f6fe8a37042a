"""Pure ``DataFrame -> DataFrame`` transforms, one per feature table (docs/contracts.md §2).

Time rules, shared by every table:

- Snapshots are the dates of a :class:`SnapshotGrid` at 00:00 UTC.
- Event windows are half-open ``[snapshot - N days, snapshot)``: an event 8 days old counts
  in 30d, not in 7d; an event at or after the snapshot never counts (no leakage). Snapshots
  fall on midnights, so whole days decide membership exactly.
- State tables (profile, devices, tech config, consent, labels, suppression) show the state
  in force at the snapshot instant: a change stamped ``<= snapshot`` is visible, a validity
  end (``valid_to``) is exclusive.

Each event is mapped to the snapshots whose window contains it with arithmetic on the grid
(``explode(sequence(k_min, k_max))``), never a range join, so the same code runs on a
cluster at any size. Customers with no events get zeros (counts, minutes and shares).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lookalike.datagen import CHANNELS, DAYPARTS, DEVICE_TYPES, GENRES, NAV_CATEGORIES

WINDOWS_DAYS = (7, 30, 90)
SNAPSHOT_INDEX = "snapshot_index"
AGE_DAYS = "age_days"
KEY = "customer_id"
EVENT_TS = "event_timestamp"
CREATED_TS = "created_timestamp"
NO_DEVICE = "none"
# Ties for the primary device type go to the first in this order (the living-room screen).
DEVICE_PRIORITY = ("smart_tv", "stb", "console", "pc", "tablet", "mobile")


@dataclass(frozen=True)
class SnapshotGrid:
    """Snapshot dates ``start, start + f, ...`` (``count`` of them), each at 00:00 UTC."""

    start: date
    frequency_days: int
    count: int

    @classmethod
    def between(cls, start: date, end: date, frequency_days: int) -> SnapshotGrid:
        if frequency_days < 1:
            raise ValueError(f"frequency_days must be >= 1, got {frequency_days}")
        if end < start:
            raise ValueError(f"end date {end} is before start date {start}")
        return cls(start, frequency_days, (end - start).days // frequency_days + 1)

    @property
    def dates(self) -> list[date]:
        return [self.start + timedelta(days=k * self.frequency_days) for k in range(self.count)]

    @property
    def start_epoch_s(self) -> int:
        return int(datetime(self.start.year, self.start.month, self.start.day, tzinfo=timezone.utc).timestamp())

    @property
    def period_s(self) -> int:
        return self.frequency_days * 86_400

    def snapshot_ts(self, index: Column) -> Column:
        return F.timestamp_seconds(F.lit(self.start_epoch_s) + index.cast("long") * F.lit(self.period_s))


# --------------------------------------------------------------------------- grid helpers


def explode_windows(df: DataFrame, ts_col: str, grid: SnapshotGrid, max_days: int) -> DataFrame:
    """One row per (event, snapshot whose ``[s - max_days, s)`` window holds the event).

    Adds ``snapshot_index`` and ``age_days`` (1..max_days: whole days from the event's day to
    the snapshot; 1 = the day before the snapshot).
    """
    f = grid.frequency_days
    day_offset = F.datediff(F.to_date(F.col(ts_col)), F.lit(grid.start.isoformat()).cast("date"))
    k_min = F.greatest(F.lit(0), F.ceil((day_offset + 1) / f))
    k_max = F.least(F.lit(grid.count - 1), F.floor((day_offset + max_days) / f))
    return (
        df.withColumn("_d0", day_offset)
        .withColumn("_kmin", k_min.cast("int"))
        .withColumn("_kmax", k_max.cast("int"))
        .where(F.col("_kmin") <= F.col("_kmax"))
        .withColumn(SNAPSHOT_INDEX, F.explode(F.sequence(F.col("_kmin"), F.col("_kmax"))))
        .withColumn(AGE_DAYS, F.col(SNAPSHOT_INDEX) * f - F.col("_d0"))
        .drop("_d0", "_kmin", "_kmax")
    )


def explode_state(df: DataFrame, from_col: str, to_col: str | None, grid: SnapshotGrid) -> DataFrame:
    """One row per (state row, snapshot s with ``from <= s < to``); ``to`` null = open."""
    period = grid.period_s
    rel_from = F.unix_micros(F.col(from_col)) - F.lit(grid.start_epoch_s * 1_000_000)
    k_min = F.greatest(F.lit(0), F.ceil(rel_from / F.lit(period * 1_000_000)))
    if to_col is None:
        k_max: Column = F.lit(grid.count - 1)
    else:
        rel_to = F.unix_micros(F.col(to_col)) - F.lit(grid.start_epoch_s * 1_000_000)
        k_max = F.when(F.col(to_col).isNull(), F.lit(grid.count - 1)).otherwise(
            F.least(F.lit(grid.count - 1), F.ceil(rel_to / F.lit(period * 1_000_000)) - 1)
        )
    return (
        df.withColumn("_kmin", k_min.cast("int"))
        .withColumn("_kmax", k_max.cast("int"))
        .where(F.col("_kmin") <= F.col("_kmax"))
        .withColumn(SNAPSHOT_INDEX, F.explode(F.sequence(F.col("_kmin"), F.col("_kmax"))))
        .drop("_kmin", "_kmax")
    )


def _with_next(df: DataFrame, ts_col: str, next_col: str = "_valid_to") -> DataFrame:
    """Validity end of each state row: the next row's timestamp for the same customer."""
    window = Window.partitionBy(KEY).orderBy(F.col(ts_col))
    return df.withColumn(next_col, F.lead(F.col(ts_col)).over(window))


def finish(df: DataFrame, grid: SnapshotGrid, columns: Sequence[str]) -> DataFrame:
    """Key columns first, ``snapshot_index`` turned into ``event_timestamp``."""
    return df.select(
        F.col(KEY).cast("long").alias(KEY),
        grid.snapshot_ts(F.col(SNAPSHOT_INDEX)).alias(EVENT_TS),
        *[F.col(c) for c in columns],
    )


def _fill(df: DataFrame, defaults: dict[str, object]) -> DataFrame:
    return df.select(*[
        F.coalesce(F.col(c), F.lit(defaults[c])).alias(c) if c in defaults else F.col(c) for c in df.columns
    ])


def _ratio(num: Column, den: Column) -> Column:
    return F.when(den > 0, num / den).otherwise(F.lit(0.0))


def _slug(value: str) -> str:
    return value.lower().replace("-", "_").replace(" ", "_")


# --------------------------------------------------------------------------- output schemas


def _content_schema() -> dict[str, str]:
    schema: dict[str, str] = {}
    for w in WINDOWS_DAYS:
        schema |= {f"minutes_{w}d": "double", f"sessions_{w}d": "bigint", f"active_days_{w}d": "bigint",
                   f"avg_session_min_{w}d": "double"}
        schema |= {f"share_genre_{_slug(g)}_{w}d": "double" for g in GENRES}
        schema |= {f"share_daypart_{_slug(d)}_{w}d": "double" for d in DAYPARTS}
    schema |= {f"share_channel_{_slug(c)}_30d": "double" for c in CHANNELS}
    return schema


FEATURE_SCHEMAS: dict[str, dict[str, str]] = {
    "content_consumption": _content_schema(),
    "devices": {
        "n_devices": "bigint", **{f"has_{t}": "boolean" for t in ("smart_tv", "stb", "mobile", "tablet", "console")},
        "primary_device_type": "string", "primary_os": "string", "max_screen_inches": "double",
        "newest_hw_generation": "bigint", "mean_device_age_years": "double",
    },
    "profile": {
        "age": "bigint", "gender": "string", "tenure_months": "bigint", "plan": "string", "contract_type": "string",
        "region_code": "string", "n_lines": "bigint", "is_family_plan": "boolean", "payment_method": "string",
    },
    "mobile_roaming": {
        "data_gb_7d": "double", "data_gb_30d": "double", "voice_min_30d": "double", "sms_30d": "bigint",
        "intl_call_min_30d": "double", "share_5g_30d": "double", "roaming_days_90d": "bigint",
        "roaming_data_gb_90d": "double", "roaming_countries_90d": "bigint",
    },
    "tech_config": {
        "connection_type": "string", "bandwidth_mbps": "double", "router_model": "string", "stb_firmware": "string",
        "uhd_enabled": "boolean", "wifi_extender": "boolean", "parental_control": "boolean", "multiroom": "boolean",
    },
    "web_navigation": {
        "nav_sessions_30d": "bigint", **{f"nav_share_{_slug(c)}_30d": "double" for c in NAV_CATEGORIES},
    },
    "segment_labels": {"segments": "array<string>"},
    "consent_status": {"opt_in": "boolean", "consent_valid_from": "timestamp"},
    "suppression_list": {"suppressed": "boolean", "objected_at": "timestamp"},
}
# Views a model may read (legitimate interest); the others need consent or are legal lists.
LEGITIMATE_INTEREST_TABLES = ("content_consumption", "devices", "profile", "mobile_roaming", "tech_config")


def _typed(df: DataFrame, table: str) -> DataFrame:
    """Cast feature columns to the declared output types (stable schema for Feast)."""
    schema = FEATURE_SCHEMAS[table]
    return df.select(KEY, EVENT_TS, *[F.col(c).cast(t).alias(c) for c, t in schema.items()])


# --------------------------------------------------------------------------- transforms


def population(customers: DataFrame, grid: SnapshotGrid) -> DataFrame:
    """``(customer_id, snapshot_index)`` for every customer signed up by each snapshot."""
    first = customers.groupBy(KEY).agg(F.min("signup_date").alias("signup_date"))
    return explode_state(first, "signup_date", None, grid).select(KEY, SNAPSHOT_INDEX)


def profile(customers: DataFrame, grid: SnapshotGrid) -> DataFrame:
    """Latest customer row as of each snapshot; customers who sign up later are absent."""
    rows = explode_state(_with_next(customers, "updated_at"), "updated_at", "_valid_to", grid)
    rows = rows.where(F.col("signup_date") <= grid.snapshot_ts(F.col(SNAPSHOT_INDEX)))
    snap = grid.snapshot_ts(F.col(SNAPSHOT_INDEX))
    out = rows.select(
        KEY, SNAPSHOT_INDEX,
        F.floor(F.months_between(snap, F.col("birth_date").cast("timestamp")) / 12).alias("age"),
        F.col("gender"),
        F.floor(F.months_between(snap, F.col("signup_date"))).alias("tenure_months"),
        F.col("plan"), F.col("contract_type"), F.col("region_code"), F.col("n_lines"),
        (F.col("plan") == F.lit("family")).alias("is_family_plan"),
        F.col("payment_method"),
    )
    return _typed(finish(out, grid, list(FEATURE_SCHEMAS["profile"])), "profile")


def content_consumption(sessions: DataFrame, people: DataFrame, grid: SnapshotGrid) -> DataFrame:
    """Viewing minutes, sessions, active days and genre/daypart/channel shares per window.

    One aggregation pass over (session, snapshot) rows, so Spark's map-side partial
    aggregation shrinks the shuffle to about one row per customer and snapshot. Active days
    are counted with a bitmask of window days (bit ``age_days - 1``; two longs cover 90
    days) instead of a distinct count, which would need an extra shuffle.
    """
    rows = explode_windows(sessions, "start_ts", grid, max(WINDOWS_DAYS))
    age = F.col(AGE_DAYS)
    minutes = F.col("minutes").cast("double")

    def in_window(w: int, value: Column) -> Column:
        return F.sum(F.when(age <= w, value))

    zero = F.lit(0).cast("long")
    # F.shiftleft takes a literal shift; the SQL function takes a column.
    day_bit_lo = F.expr(f"shiftleft(CAST(1 AS BIGINT), {AGE_DAYS} - 1)")
    day_bit_hi = F.expr(f"shiftleft(CAST(1 AS BIGINT), {AGE_DAYS} - 64)")
    aggs: list[Column] = [
        F.bit_or(F.when(age <= 63, day_bit_lo).otherwise(zero)).alias("_lo"),
        F.bit_or(F.when(age > 63, day_bit_hi).otherwise(zero)).alias("_hi"),
    ]
    for w in WINDOWS_DAYS:
        aggs += [in_window(w, minutes).alias(f"_m{w}"), in_window(w, F.lit(1)).alias(f"_n{w}")]
        aggs += [in_window(w, F.when(F.col("genre") == g, minutes)).alias(f"_g{w}_{_slug(g)}") for g in GENRES]
        aggs += [in_window(w, F.when(F.col("daypart") == d, minutes)).alias(f"_d{w}_{_slug(d)}") for d in DAYPARTS]
    aggs += [in_window(30, F.when(F.col("channel") == c, minutes)).alias(f"_c30_{_slug(c)}") for c in CHANNELS]
    windowed = rows.groupBy(KEY, SNAPSHOT_INDEX).agg(*aggs)
    joined = people.join(windowed, [KEY, SNAPSHOT_INDEX], "left")
    zero_cols = [c for c in joined.columns if c.startswith("_")]
    joined = _fill(joined, dict.fromkeys(zero_cols, 0))

    def active_days(w: int) -> Column:
        low = F.bit_count(F.col("_lo").bitwiseAND(F.lit((1 << min(w, 63)) - 1)))
        return low + F.bit_count(F.col("_hi")) if w > 63 else low

    features: list[Column] = []
    for w in WINDOWS_DAYS:
        total, count = F.col(f"_m{w}"), F.col(f"_n{w}")
        features += [total.alias(f"minutes_{w}d"), count.alias(f"sessions_{w}d"),
                     active_days(w).alias(f"active_days_{w}d"),
                     _ratio(total, count).alias(f"avg_session_min_{w}d")]
        features += [_ratio(F.col(f"_g{w}_{_slug(g)}"), total).alias(f"share_genre_{_slug(g)}_{w}d") for g in GENRES]
        features += [_ratio(F.col(f"_d{w}_{_slug(d)}"), total).alias(f"share_daypart_{_slug(d)}_{w}d")
                     for d in DAYPARTS]
    features += [_ratio(F.col(f"_c30_{_slug(c)}"), F.col("_m30")).alias(f"share_channel_{_slug(c)}_30d")
                 for c in CHANNELS]
    out = joined.select(KEY, SNAPSHOT_INDEX, *features)
    return _typed(finish(out, grid, list(FEATURE_SCHEMAS["content_consumption"])), "content_consumption")


def devices(device_rows: DataFrame, people: DataFrame, grid: SnapshotGrid) -> DataFrame:
    """Device inventory registered by each snapshot.

    ``primary_device_type`` is the most common type (ties: smart_tv, stb, console, pc,
    tablet, mobile); ``primary_os`` is the OS of the most recently registered device.
    Customers with no device get ``n_devices = 0``, ``none`` and zeros.
    """
    rows = explode_state(device_rows, "registered_at", None, grid)
    snap = grid.snapshot_ts(F.col(SNAPSHOT_INDEX))
    age_years = (F.unix_micros(snap) - F.unix_micros(F.col("registered_at"))) / F.lit(365.25 * 86_400 * 1e6)
    counts = [F.sum(F.when(F.col("device_type") == t, 1).otherwise(0)).alias(f"_n_{t}") for t in DEVICE_TYPES]
    agg = rows.groupBy(KEY, SNAPSHOT_INDEX).agg(
        F.count(F.lit(1)).alias("n_devices"),
        *counts,
        F.max_by(F.col("os"), F.col("registered_at")).alias("primary_os"),
        F.max("screen_inches").alias("max_screen_inches"),
        F.max("hw_generation").alias("newest_hw_generation"),
        F.avg(age_years).alias("mean_device_age_years"),
    )
    most = F.greatest(*[F.col(f"_n_{t}") for t in DEVICE_TYPES])
    primary: Column = F.lit(None).cast("string")
    for t in reversed(DEVICE_PRIORITY):
        primary = F.when((F.col(f"_n_{t}") == most) & (most > 0), F.lit(t)).otherwise(primary)
    agg = agg.withColumn("primary_device_type", primary)
    for t in ("smart_tv", "stb", "mobile", "tablet", "console"):
        agg = agg.withColumn(f"has_{t}", F.col(f"_n_{t}") > 0)
    joined = people.join(agg, [KEY, SNAPSHOT_INDEX], "left")
    joined = _fill(joined, {
        "n_devices": 0, "primary_device_type": NO_DEVICE, "primary_os": NO_DEVICE, "max_screen_inches": 0.0,
        "newest_hw_generation": 0, "mean_device_age_years": 0.0,
        **{f"has_{t}": False for t in ("smart_tv", "stb", "mobile", "tablet", "console")},
    })
    return _typed(finish(joined, grid, list(FEATURE_SCHEMAS["devices"])), "devices")


def mobile_roaming(usage: DataFrame, people: DataFrame, grid: SnapshotGrid) -> DataFrame:
    """Mobile and roaming usage; ``roaming_countries_90d`` is the most countries in one row."""
    rows = explode_windows(usage, "usage_date", grid, 90)

    def within(w: int, column: Column) -> Column:
        return F.sum(F.when(F.col(AGE_DAYS) <= w, column))

    agg = rows.groupBy(KEY, SNAPSHOT_INDEX).agg(
        within(7, F.col("data_gb")).alias("data_gb_7d"),
        within(30, F.col("data_gb")).alias("data_gb_30d"),
        within(30, F.col("voice_min")).alias("voice_min_30d"),
        within(30, F.col("sms")).alias("sms_30d"),
        within(30, F.col("intl_call_min")).alias("intl_call_min_30d"),
        within(30, F.col("share_5g") * F.col("data_gb")).alias("_data_5g_30d"),
        F.sum("roaming_days").alias("roaming_days_90d"),
        F.sum("roaming_data_gb").alias("roaming_data_gb_90d"),
        F.max("roaming_country_count").alias("roaming_countries_90d"),
    )
    agg = agg.withColumn("share_5g_30d", _ratio(F.col("_data_5g_30d"), F.col("data_gb_30d")))
    joined = people.join(agg, [KEY, SNAPSHOT_INDEX], "left")
    joined = _fill(joined, dict.fromkeys(FEATURE_SCHEMAS["mobile_roaming"], 0))
    return _typed(finish(joined, grid, list(FEATURE_SCHEMAS["mobile_roaming"])), "mobile_roaming")


def tech_config(config_rows: DataFrame, grid: SnapshotGrid) -> DataFrame:
    """Technical configuration in force at each snapshot (latest ``updated_at <= snapshot``)."""
    rows = explode_state(_with_next(config_rows, "updated_at"), "updated_at", "_valid_to", grid)
    return _typed(finish(rows, grid, list(FEATURE_SCHEMAS["tech_config"])), "tech_config")


def consent_status(consent: DataFrame, grid: SnapshotGrid) -> DataFrame:
    """The consent row in force at each snapshot (``valid_from <= s < valid_to``)."""
    rows = explode_state(consent, "valid_from", "valid_to", grid)
    out = rows.select(KEY, SNAPSHOT_INDEX, F.col("opt_in"), F.col("valid_from").alias("consent_valid_from"))
    return _typed(finish(out, grid, list(FEATURE_SCHEMAS["consent_status"])), "consent_status")


def web_navigation(events: DataFrame, consent_table: DataFrame, grid: SnapshotGrid) -> DataFrame:
    """Navigation in the last 30 days, only for customers opted in at the snapshot.

    ``consent_table`` is the output of :func:`consent_status`. Shares are of seconds.
    """
    opted_in = consent_table.where(F.col("opt_in")).select(
        KEY, F.round((F.unix_seconds(F.col(EVENT_TS)) - grid.start_epoch_s) / grid.period_s).cast("int")
        .alias(SNAPSHOT_INDEX))
    rows = explode_windows(events, "event_ts", grid, 30)
    aggs = [F.count(F.lit(1)).alias("nav_sessions_30d"), F.sum("seconds").alias("_seconds")]
    aggs += [F.sum(F.when(F.col("category") == c, F.col("seconds"))).alias(f"_s_{_slug(c)}") for c in NAV_CATEGORIES]
    agg = rows.groupBy(KEY, SNAPSHOT_INDEX).agg(*aggs)
    joined = opted_in.join(agg, [KEY, SNAPSHOT_INDEX], "left")
    joined = _fill(joined, {c: 0 for c in joined.columns if c.startswith("_") or c == "nav_sessions_30d"})
    out = joined.select(KEY, SNAPSHOT_INDEX, F.col("nav_sessions_30d"), *[
        _ratio(F.col(f"_s_{_slug(c)}"), F.col("_seconds")).alias(f"nav_share_{_slug(c)}_30d") for c in NAV_CATEGORIES
    ])
    return _typed(finish(out, grid, list(FEATURE_SCHEMAS["web_navigation"])), "web_navigation")


def segment_labels(assignments: DataFrame, grid: SnapshotGrid) -> DataFrame:
    """Sorted segment ids assigned by each snapshot; customers with none are absent."""
    rows = explode_state(assignments, "assigned_at", None, grid)
    agg = rows.groupBy(KEY, SNAPSHOT_INDEX).agg(F.sort_array(F.collect_set("segment_id")).alias("segments"))
    return _typed(finish(agg, grid, ["segments"]), "segment_labels")


def suppression_list(suppression: DataFrame, people: DataFrame, grid: SnapshotGrid) -> DataFrame:
    """Every known customer with ``suppressed`` = objected to profiling by the snapshot."""
    joined = people.join(suppression.select(KEY, "objected_at"), KEY, "left")
    snap = grid.snapshot_ts(F.col(SNAPSHOT_INDEX))
    suppressed = F.coalesce(F.col("objected_at") <= snap, F.lit(False))
    out = joined.select(
        KEY, SNAPSHOT_INDEX, suppressed.alias("suppressed"),
        F.when(suppressed, F.col("objected_at")).alias("objected_at"),
    )
    return _typed(finish(out, grid, ["suppressed", "objected_at"]), "suppression_list")
