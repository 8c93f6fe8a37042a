"""Spark transforms on tiny in-memory frames: window arithmetic, as-of state, validation."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from lookalike.errors import DataValidationError
from spark_jobs import transforms as tf
from spark_jobs.validation import check_schema, check_unique, validate_output

pytestmark = pytest.mark.unit

SNAP = date(2026, 11, 22)
SNAP_TS = datetime(2026, 11, 22, tzinfo=timezone.utc)
ONE = tf.SnapshotGrid.between(SNAP, SNAP, 7)
THREE = tf.SnapshotGrid.between(date(2026, 11, 8), SNAP, 7)


def utc(value: datetime | None) -> datetime | None:
    """PySpark collects timestamps as naive local time; make them comparable instants."""
    return None if value is None else value.astimezone(timezone.utc)


def ts(days_before: float, grid_end: datetime = SNAP_TS) -> datetime:
    return grid_end - timedelta(days=days_before)


def people_df(spark: SparkSession, ids: list[int], grid: tf.SnapshotGrid) -> DataFrame:
    rows = [(i, k) for i in ids for k in range(grid.count)]
    return spark.createDataFrame(rows, "customer_id long, snapshot_index int")


SESSION_SCHEMA = "customer_id long, start_ts timestamp, genre string, channel string, minutes double, " \
                 "device_type string, daypart string"


def sessions_df(spark: SparkSession, rows: list[tuple[int, datetime, str, float]]) -> DataFrame:
    return spark.createDataFrame(
        [(c, t, g, "vod", m, "smart_tv", "prime") for c, t, g, m in rows], SESSION_SCHEMA
    )


def by_customer(df: DataFrame) -> dict[int, dict[str, object]]:
    return {r["customer_id"]: r.asDict() for r in df.collect()}


def test_content_windows_are_half_open(spark: SparkSession) -> None:
    sessions = sessions_df(spark, [
        (1, ts(1), "sports", 10.0),            # yesterday: 7d, 30d, 90d
        (1, ts(8), "movies", 20.0),            # 8 days old: 30d and 90d, not 7d
        (1, ts(7), "sports", 5.0),             # 00:00 seven days ago: inside 7d
        (1, ts(90), "news", 40.0),             # 00:00 ninety days ago: inside 90d
        (1, ts(90.5), "news", 1000.0),         # older than 90 days: nowhere
        (1, ts(0), "kids", 1000.0),            # at the snapshot instant: excluded (no leakage)
        (1, ts(-0.5), "kids", 1000.0),         # after the snapshot: excluded
    ])
    out = by_customer(tf.content_consumption(sessions, people_df(spark, [1, 2], ONE), ONE))
    one = out[1]
    assert one["minutes_7d"] == pytest.approx(15.0)
    assert one["sessions_7d"] == 2
    assert one["minutes_30d"] == pytest.approx(35.0)
    assert one["sessions_30d"] == 3
    assert one["minutes_90d"] == pytest.approx(75.0)
    assert one["sessions_90d"] == 4
    assert one["active_days_7d"] == 2
    assert one["share_genre_sports_7d"] == pytest.approx(1.0)
    assert one["share_genre_movies_30d"] == pytest.approx(20.0 / 35.0)
    assert one["share_genre_kids_90d"] == 0.0
    assert one["avg_session_min_30d"] == pytest.approx(35.0 / 3)
    assert one["share_channel_vod_30d"] == pytest.approx(1.0)
    assert one["share_daypart_prime_90d"] == pytest.approx(1.0)
    # A customer with no sessions gets zeros, not nulls.
    two = out[2]
    assert two["minutes_90d"] == 0.0 and two["sessions_7d"] == 0 and two["share_genre_sports_30d"] == 0.0
    assert set(one) == {"customer_id", "event_timestamp", *tf.FEATURE_SCHEMAS["content_consumption"]}
    assert utc(one["event_timestamp"]) == SNAP_TS


def test_active_days_count_distinct_days_across_the_whole_window(spark: SparkSession) -> None:
    days_before = [1, 1, 2, 7, 8, 30, 31, 63, 64, 65, 89, 90]  # two sessions on day 1
    sessions = sessions_df(spark, [(1, ts(d - 0.25), "news", 1.0) for d in days_before])
    row = by_customer(tf.content_consumption(sessions, people_df(spark, [1], ONE), ONE))[1]
    assert (row["active_days_7d"], row["active_days_30d"], row["active_days_90d"]) == (3, 5, 11)
    assert (row["sessions_7d"], row["sessions_30d"], row["sessions_90d"]) == (4, 6, 12)


def test_content_multi_snapshot_assigns_each_event_to_its_windows(spark: SparkSession) -> None:
    # 2026-11-10 12:00 is after the 11-08 snapshot, 4.5 days before 11-15 and 11.5 before 11-22.
    event = datetime(2026, 11, 10, 12, tzinfo=timezone.utc)
    sessions = sessions_df(spark, [(1, event, "series", 30.0)])
    rows = tf.content_consumption(sessions, people_df(spark, [1], THREE), THREE).collect()
    per_snapshot = {utc(r["event_timestamp"]).date(): (r["minutes_7d"], r["minutes_30d"]) for r in rows}
    assert per_snapshot == {
        date(2026, 11, 8): (0.0, 0.0),
        date(2026, 11, 15): (30.0, 30.0),
        date(2026, 11, 22): (0.0, 30.0),
    }


def test_snapshot_grid_steps_from_start() -> None:
    grid = tf.SnapshotGrid.between(date(2026, 11, 1), date(2026, 11, 20), 7)
    assert grid.dates == [date(2026, 11, 1), date(2026, 11, 8), date(2026, 11, 15)]
    with pytest.raises(ValueError):
        tf.SnapshotGrid.between(date(2026, 11, 20), date(2026, 11, 1), 7)


CUSTOMER_SCHEMA = "customer_id long, birth_date date, gender string, signup_date timestamp, plan string, " \
                  "contract_type string, region_code string, n_lines int, payment_method string, updated_at timestamp"


def test_profile_is_latest_state_as_of_each_snapshot(spark: SparkSession) -> None:
    signup = datetime(2020, 1, 1, tzinfo=timezone.utc)
    late_signup = datetime(2026, 11, 12, 9, tzinfo=timezone.utc)
    plan_change = datetime(2026, 11, 15, tzinfo=timezone.utc)  # exactly at a snapshot: visible there
    customers = spark.createDataFrame([
        (1, date(1990, 6, 1), "F", signup, "basic", "monthly", "R0001", 2, "card", signup),
        (1, date(1990, 6, 1), "F", signup, "premium", "monthly", "R0001", 2, "card", plan_change),
        (2, date(2000, 1, 1), "M", late_signup, "family", "prepaid", "R0002", 1, "card", late_signup),
    ], CUSTOMER_SCHEMA)
    rows = tf.profile(customers, THREE).collect()
    state = {(r["customer_id"], utc(r["event_timestamp"]).date()): r for r in rows}
    assert state[(1, date(2026, 11, 8))]["plan"] == "basic"
    assert state[(1, date(2026, 11, 15))]["plan"] == "premium"
    assert state[(1, date(2026, 11, 22))]["plan"] == "premium"
    assert (2, date(2026, 11, 8)) not in state  # signed up after that snapshot
    assert state[(2, date(2026, 11, 15))]["is_family_plan"] is True
    assert state[(1, date(2026, 11, 22))]["age"] == 36
    assert state[(1, date(2026, 11, 22))]["tenure_months"] == 82
    people = {(r["customer_id"], r["snapshot_index"]) for r in tf.population(customers, THREE).collect()}
    assert people == {(1, 0), (1, 1), (1, 2), (2, 1), (2, 2)}


def test_consent_validity_end_is_exclusive(spark: SparkSession) -> None:
    opt_in_at = datetime(2026, 11, 15, tzinfo=timezone.utc)
    consent = spark.createDataFrame([
        (1, False, datetime(2020, 1, 1, tzinfo=timezone.utc), opt_in_at),
        (1, True, opt_in_at, None),
        (2, True, datetime(2020, 1, 1, tzinfo=timezone.utc), None),
    ], "customer_id long, opt_in boolean, valid_from timestamp, valid_to timestamp")
    rows = tf.consent_status(consent, THREE).collect()
    state = {(r["customer_id"], utc(r["event_timestamp"]).date()): r["opt_in"] for r in rows}
    assert state == {
        (1, date(2026, 11, 8)): False, (1, date(2026, 11, 15)): True, (1, date(2026, 11, 22)): True,
        (2, date(2026, 11, 8)): True, (2, date(2026, 11, 15)): True, (2, date(2026, 11, 22)): True,
    }


def test_segment_labels_accumulate_sorted(spark: SparkSession) -> None:
    assignments = spark.createDataFrame([
        (1, "S10", datetime(2026, 1, 1, tzinfo=timezone.utc)),
        (1, "S02", datetime(2026, 11, 9, tzinfo=timezone.utc)),
        (1, "S05", datetime(2026, 11, 22, 8, tzinfo=timezone.utc)),  # after the last snapshot instant
        (2, "S01", datetime(2026, 11, 16, tzinfo=timezone.utc)),
    ], "customer_id long, segment_id string, assigned_at timestamp")
    rows = tf.segment_labels(assignments, THREE).collect()
    labels = {(r["customer_id"], utc(r["event_timestamp"]).date()): r["segments"] for r in rows}
    assert labels == {
        (1, date(2026, 11, 8)): ["S10"],
        (1, date(2026, 11, 15)): ["S02", "S10"],
        (1, date(2026, 11, 22)): ["S02", "S10"],
        (2, date(2026, 11, 22)): ["S01"],
    }


def test_suppression_only_from_objection(spark: SparkSession) -> None:
    objected = datetime(2026, 11, 10, tzinfo=timezone.utc)
    suppression = spark.createDataFrame([(1, objected)], "customer_id long, objected_at timestamp")
    rows = tf.suppression_list(suppression, people_df(spark, [1, 2], THREE), THREE).collect()
    state = {(r["customer_id"], utc(r["event_timestamp"]).date()): (r["suppressed"], utc(r["objected_at"])) for r in rows}
    assert state[(1, date(2026, 11, 8))] == (False, None)
    assert state[(1, date(2026, 11, 15))] == (True, objected)
    assert state[(2, date(2026, 11, 22))] == (False, None)


DEVICE_SCHEMA = "customer_id long, device_id long, device_type string, os string, screen_inches double, " \
                "hw_generation int, registered_at timestamp"


def test_devices_as_of_snapshot(spark: SparkSession) -> None:
    old = datetime(2024, 11, 22, tzinfo=timezone.utc)
    devices = spark.createDataFrame([
        (1, 10, "mobile", "ios", 6.1, 5, old),
        (1, 11, "smart_tv", "webos", 55.0, 4, old),
        (1, 12, "console", "xbox", 0.0, 6, ts(1)),              # registered after 11-15
        (1, 13, "mobile", "android", 6.5, 7, ts(-1)),           # after the last snapshot
    ], DEVICE_SCHEMA)
    rows = tf.devices(devices, people_df(spark, [1, 2], THREE), THREE).collect()
    state = {(r["customer_id"], utc(r["event_timestamp"]).date()): r for r in rows}
    early, last, none = state[(1, date(2026, 11, 15))], state[(1, date(2026, 11, 22))], state[(2, date(2026, 11, 22))]
    assert early["n_devices"] == 2 and early["has_console"] is False
    assert early["primary_device_type"] == "smart_tv"  # tie mobile/smart_tv -> smart_tv
    assert last["n_devices"] == 3 and last["has_console"] is True and last["newest_hw_generation"] == 6
    assert last["primary_os"] == "xbox"  # newest device
    assert last["mean_device_age_years"] == pytest.approx((2 * 2.0 + 1 / 365.25) / 3, rel=1e-2)
    assert none["n_devices"] == 0 and none["primary_device_type"] == tf.NO_DEVICE and none["has_mobile"] is False


USAGE_SCHEMA = "customer_id long, usage_date timestamp, data_gb double, voice_min double, sms int, " \
               "roaming_days int, roaming_data_gb double, roaming_country_count int, intl_call_min double, share_5g double"


def test_mobile_roaming_windows(spark: SparkSession) -> None:
    usage = spark.createDataFrame([
        (1, ts(7), 2.0, 10.0, 1, 0, 0.0, 0, 1.0, 1.0),    # last week: 7d and 30d
        (1, ts(14), 6.0, 20.0, 2, 3, 1.5, 2, 2.0, 0.0),   # 30d only
        (1, ts(63), 9.0, 30.0, 3, 4, 2.0, 3, 4.0, 0.5),   # 90d only
        (1, ts(0), 50.0, 50.0, 5, 7, 9.0, 9, 9.0, 1.0),   # the week starting at the snapshot: excluded
    ], USAGE_SCHEMA)
    row = by_customer(tf.mobile_roaming(usage, people_df(spark, [1, 2], ONE), ONE))
    one = row[1]
    assert one["data_gb_7d"] == pytest.approx(2.0)
    assert one["data_gb_30d"] == pytest.approx(8.0)
    assert one["sms_30d"] == 3
    assert one["share_5g_30d"] == pytest.approx(2.0 / 8.0)  # data-weighted
    assert one["roaming_days_90d"] == 7
    assert one["roaming_countries_90d"] == 3
    assert row[2]["data_gb_30d"] == 0.0 and row[2]["roaming_days_90d"] == 0


def test_web_navigation_only_for_opted_in(spark: SparkSession) -> None:
    consent = spark.createDataFrame([
        (1, SNAP_TS, True, ts(100)), (2, SNAP_TS, False, ts(100)),
    ], "customer_id long, event_timestamp timestamp, opt_in boolean, consent_valid_from timestamp")
    events = spark.createDataFrame([
        (1, ts(2), "automotive", 30.0), (1, ts(3), "social", 90.0), (1, ts(31), "pets", 500.0),
        (2, ts(2), "automotive", 30.0),
    ], "customer_id long, event_ts timestamp, category string, seconds double")
    rows = by_customer(tf.web_navigation(events, consent, ONE))
    assert set(rows) == {1}
    assert rows[1]["nav_sessions_30d"] == 2
    assert rows[1]["nav_share_automotive_30d"] == pytest.approx(0.25)
    assert rows[1]["nav_share_pets_30d"] == 0.0


def test_tech_config_latest_row(spark: SparkSession) -> None:
    config = spark.createDataFrame([
        (1, ts(400), "dsl", 30.0, "HGU-1", "fw-3.1", False, False, False, False),
        (1, ts(3), "fiber", 600.0, "HGU-2", "fw-4.0", True, False, False, True),
    ], "customer_id long, updated_at timestamp, connection_type string, bandwidth_mbps double, router_model string, "
       "stb_firmware string, uhd_enabled boolean, wifi_extender boolean, parental_control boolean, multiroom boolean")
    rows = {utc(r["event_timestamp"]).date(): r["connection_type"] for r in tf.tech_config(config, THREE).collect()}
    assert rows == {date(2026, 11, 8): "dsl", date(2026, 11, 15): "dsl", date(2026, 11, 22): "fiber"}


def test_check_schema_names_table_and_column(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1, "x")], "customer_id long, genre string")
    with pytest.raises(DataValidationError, match=r"'viewing_sessions'.*missing column.*'minutes'"):
        check_schema("viewing_sessions", df, {"customer_id": "bigint", "minutes": "numeric"})
    with pytest.raises(DataValidationError, match=r"'viewing_sessions'.*column 'genre' has type string, expected numeric"):
        check_schema("viewing_sessions", df, {"genre": "numeric"})
    naive = spark.createDataFrame([(1, datetime(2026, 1, 1))], T.StructType([
        T.StructField("customer_id", T.LongType()), T.StructField("start_ts", T.TimestampNTZType())]))
    with pytest.raises(DataValidationError, match=r"'start_ts' has type timestamp_ntz"):
        check_schema("viewing_sessions", naive, {"start_ts": "timestamp"})


def test_check_unique_and_output_duplicates(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1, SNAP_TS, True), (1, SNAP_TS, False), (2, SNAP_TS, True)],
                               "customer_id long, event_timestamp timestamp, suppressed boolean")
    with pytest.raises(DataValidationError, match=r"'suppression_list'.*duplicate key.*customer_id=1"):
        check_unique("suppression_list", df, ["customer_id", "event_timestamp"])
    full = df.withColumn("created_timestamp", df["event_timestamp"]).withColumn("objected_at", df["event_timestamp"])
    with pytest.raises(DataValidationError, match="duplicate key"):
        validate_output("suppression_list", full, tf.FEATURE_SCHEMAS["suppression_list"])
    validate_output("suppression_list", full.where("suppressed"), tf.FEATURE_SCHEMAS["suppression_list"])
