"""Input and output checks that fail with a :class:`DataValidationError` naming table and column."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lookalike.errors import DataValidationError

# Kinds: "integer" (any integral), "numeric" (any number), "string", "boolean", "timestamp"
# (UTC instant, not NTZ), "date_or_timestamp", or an exact Spark simpleString.
RAW_SCHEMAS: dict[str, dict[str, str]] = {
    "customers": {
        "customer_id": "bigint", "birth_date": "date_or_timestamp", "gender": "string",
        "signup_date": "timestamp", "plan": "string", "contract_type": "string", "region_code": "string",
        "n_lines": "integer", "payment_method": "string", "updated_at": "timestamp",
    },
    "consent": {"customer_id": "bigint", "opt_in": "boolean", "valid_from": "timestamp", "valid_to": "timestamp"},
    "suppression": {"customer_id": "bigint", "objected_at": "timestamp"},
    "viewing_sessions": {
        "customer_id": "bigint", "start_ts": "timestamp", "genre": "string", "channel": "string",
        "minutes": "numeric", "device_type": "string", "daypart": "string",
    },
    "devices": {
        "customer_id": "bigint", "device_id": "integer", "device_type": "string", "os": "string",
        "screen_inches": "numeric", "hw_generation": "integer", "registered_at": "timestamp",
    },
    "mobile_usage": {
        "customer_id": "bigint", "usage_date": "timestamp", "data_gb": "numeric", "voice_min": "numeric",
        "sms": "integer", "roaming_days": "integer", "roaming_data_gb": "numeric",
        "roaming_country_count": "integer", "intl_call_min": "numeric", "share_5g": "numeric",
    },
    "tech_config": {
        "customer_id": "bigint", "updated_at": "timestamp", "connection_type": "string",
        "bandwidth_mbps": "numeric", "router_model": "string", "stb_firmware": "string",
        "uhd_enabled": "boolean", "wifi_extender": "boolean", "parental_control": "boolean", "multiroom": "boolean",
    },
    "navigation_events": {"customer_id": "bigint", "event_ts": "timestamp", "category": "string", "seconds": "numeric"},
    "segment_assignments": {"customer_id": "bigint", "segment_id": "string", "assigned_at": "timestamp"},
}
# Keys that must be unique in the raw tables (a duplicate would double-count or make the
# state at a snapshot ambiguous).
RAW_KEYS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id", "updated_at"),
    "consent": ("customer_id", "valid_from"),
    "suppression": ("customer_id",),
    "devices": ("device_id",),
    "mobile_usage": ("customer_id", "usage_date"),
    "tech_config": ("customer_id", "updated_at"),
    "segment_assignments": ("customer_id", "segment_id"),
}
OUTPUT_KEYS = ("customer_id", "event_timestamp")


def _matches(data_type: T.DataType, kind: str) -> bool:
    if kind == "integer":
        return isinstance(data_type, T.IntegralType)
    if kind == "numeric":
        return isinstance(data_type, T.NumericType)
    if kind == "timestamp":
        return isinstance(data_type, T.TimestampType)
    if kind == "date_or_timestamp":
        return isinstance(data_type, T.DateType | T.TimestampType)
    return bool(data_type.simpleString() == kind)


def _describe(kind: str) -> str:
    return {"timestamp": "timestamp (UTC instant, e.g. timestamp[us, tz=UTC])",
            "date_or_timestamp": "date or timestamp"}.get(kind, kind)


def check_schema(table: str, df: DataFrame, schema: dict[str, str]) -> None:
    """Every column of ``schema`` is present with a matching type; extra columns are fine."""
    fields = {f.name: f.dataType for f in df.schema.fields}
    missing = [c for c in schema if c not in fields]
    if missing:
        raise DataValidationError(
            f"table {table!r}: missing column(s) {missing}; found {sorted(fields)}"
        )
    for column, kind in schema.items():
        if not _matches(fields[column], kind):
            raise DataValidationError(
                f"table {table!r}: column {column!r} has type {fields[column].simpleString()}, "
                f"expected {_describe(kind)}"
            )


def check_unique(table: str, df: DataFrame, keys: Sequence[str], examples: int = 3) -> None:
    """No two rows share ``keys``; the error shows a few offending keys."""
    dupes = (
        df.groupBy(*keys).count().where(F.col("count") > 1).orderBy(F.col("count").desc()).limit(examples).collect()
    )
    if dupes:
        shown = "; ".join(
            ", ".join(f"{k}={row[k]}" for k in keys) + f" ({row['count']} rows)" for row in dupes
        )
        raise DataValidationError(
            f"table {table!r}: duplicate key ({', '.join(keys)}) — e.g. {shown}"
        )


def check_not_null(table: str, df: DataFrame, columns: Sequence[str]) -> None:
    row = df.select(*[F.sum(F.col(c).isNull().cast("long")).alias(c) for c in columns]).first()
    bad = {c: int(row[c] or 0) for c in columns} if row is not None else {}
    nulls = {c: n for c, n in bad.items() if n}
    if nulls:
        raise DataValidationError(f"table {table!r}: null values in key column(s) {nulls}")


def validate_raw(table: str, df: DataFrame) -> None:
    check_schema(table, df, RAW_SCHEMAS[table])
    keys = RAW_KEYS.get(table)
    if keys:
        check_unique(table, df, keys)


def validate_output(table: str, df: DataFrame, feature_schema: dict[str, str]) -> None:
    """A feature table as Feast will read it: keys, declared types, one row per key."""
    schema = {"customer_id": "bigint", "event_timestamp": "timestamp", "created_timestamp": "timestamp",
              **feature_schema}
    check_schema(table, df, schema)
    check_not_null(table, df, OUTPUT_KEYS)
    check_unique(table, df, OUTPUT_KEYS)
