"""The synthetic generator: contract schema, determinism, consent rules, planted structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lookalike.artifacts import verify_manifest
from lookalike.datagen import DatagenConfig, run
from lookalike.errors import ConfigError

pytestmark = pytest.mark.unit

TABLES = ("customers", "consent", "suppression", "viewing_sessions", "devices", "mobile_usage", "tech_config",
          "navigation_events", "segment_assignments", "segment_catalog")
TS = pa.timestamp("us", tz="UTC")
EXPECTED_COLUMNS = {
    "customers": ["customer_id", "birth_date", "gender", "signup_date", "plan", "contract_type", "region_code",
                  "n_lines", "payment_method", "updated_at"],
    "consent": ["customer_id", "opt_in", "valid_from", "valid_to"],
    "suppression": ["customer_id", "objected_at"],
    "viewing_sessions": ["customer_id", "start_ts", "genre", "channel", "minutes", "device_type", "daypart"],
    "devices": ["customer_id", "device_id", "device_type", "os", "screen_inches", "hw_generation", "registered_at"],
    "mobile_usage": ["customer_id", "usage_date", "data_gb", "voice_min", "sms", "roaming_days", "roaming_data_gb",
                     "roaming_country_count", "intl_call_min", "share_5g"],
    "tech_config": ["customer_id", "updated_at", "connection_type", "bandwidth_mbps", "router_model", "stb_firmware",
                    "uhd_enabled", "wifi_extender", "parental_control", "multiroom"],
    "navigation_events": ["customer_id", "event_ts", "category", "seconds"],
    "segment_assignments": ["customer_id", "segment_id", "assigned_at"],
    "segment_catalog": ["segment_id", "name", "kind", "description"],
}


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(DatagenConfig(customers=3_000, seed=11, out_dir=tmp_path_factory.mktemp("raw") / "raw",
                             chunk_customers=1_000))


def read(raw: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(raw / f"{table}.parquet")


def test_tables_follow_the_contract(small_raw: Path) -> None:
    verify_manifest(small_raw, "raw_tables")
    for table in TABLES:
        schema = pq.read_schema(small_raw / f"{table}.parquet")
        assert schema.names == EXPECTED_COLUMNS[table], table
        for field in schema:
            if field.name == "customer_id":
                assert field.type == pa.int64(), table
            if pa.types.is_timestamp(field.type):
                assert field.type == TS, f"{table}.{field.name}"
    customers = read(small_raw, "customers")
    assert customers["customer_id"].nunique() == 3_000
    assert not customers.duplicated(["customer_id", "updated_at"]).any()
    assert set(customers["plan"]) <= {"basic", "standard", "premium", "sports", "family"}
    assert customers["region_code"].str.fullmatch(r"R\d{4}").all()
    sessions = read(small_raw, "viewing_sessions")
    assert 30 < len(sessions) / 3_000 < 80  # ~3 a week over 120 days
    assert sessions["start_ts"].max() < pd.Timestamp("2026-11-22", tz="UTC")
    assert set(sessions["daypart"]) == {"morning", "afternoon", "prime", "late"}


def test_consent_and_sensitive_tables(small_raw: Path) -> None:
    consent = read(small_raw, "consent")
    end = pd.Timestamp("2026-11-22", tz="UTC")
    current = consent[consent["valid_to"].isna()]
    assert current["customer_id"].is_unique and len(current) == 3_000
    opted_in = set(current.loc[current["opt_in"], "customer_id"])
    assert 0.30 < len(opted_in) / 3_000 < 0.40
    late = consent[consent["opt_in"] & (consent["valid_from"] > end - pd.Timedelta(days=120))]
    assert len(late) > 20  # late opt-ins make point-in-time joins matter
    nav = read(small_raw, "navigation_events")
    assignments = read(small_raw, "segment_assignments")
    assert set(nav["customer_id"]) <= opted_in
    assert set(assignments["customer_id"]) == opted_in
    per_customer = assignments.groupby("customer_id").size()
    assert per_customer.min() >= 1 and per_customer.max() <= 6
    since = current.set_index("customer_id")["valid_from"]
    assert (assignments["assigned_at"].to_numpy() >= since.loc[assignments["customer_id"]].to_numpy()).all()
    assert (assignments["assigned_at"] > end - pd.Timedelta(days=120)).mean() > 0.2  # labels change over time
    suppression = read(small_raw, "suppression")
    assert suppression["customer_id"].is_unique and 0.005 < len(suppression) / 3_000 < 0.04


def test_segment_catalog_kinds_and_sizes(small_raw: Path) -> None:
    catalog = read(small_raw, "segment_catalog")
    assert len(catalog) == 60 and catalog["segment_id"].is_unique
    assert catalog["kind"].value_counts().to_dict() == {"behavioural": 25, "mixed": 13, "demographic": 12,
                                                        "navigation": 10}
    assignments = read(small_raw, "segment_assignments")
    share = assignments["segment_id"].value_counts() / assignments["customer_id"].nunique()
    assert share.max() > 0.2 and share.min() < 0.03


def test_planted_structure_is_visible(small_raw: Path) -> None:
    """Sports segment members watch more sports; navigation segments leave no viewing trace."""
    catalog = read(small_raw, "segment_catalog").set_index("name")
    assignments = read(small_raw, "segment_assignments")
    sessions = read(small_raw, "viewing_sessions")
    minutes = sessions.pivot_table(index="customer_id", columns="genre", values="minutes", aggfunc="sum").fillna(0)
    sports_share = minutes["sports"] / minutes.sum(axis=1)
    opt_ins = assignments["customer_id"].unique()

    def gap(segment_name: str) -> float:
        members = set(assignments.loc[assignments["segment_id"] == catalog.loc[segment_name, "segment_id"], "customer_id"])
        inside = sports_share.reindex([c for c in opt_ins if c in members]).dropna()
        outside = sports_share.reindex([c for c in opt_ins if c not in members]).dropna()
        return float(inside.mean() - outside.mean())

    assert gap("sports_enthusiasts") > 0.15
    assert abs(gap("nav_pets_intenders")) < 0.05


def test_same_seed_same_data_and_different_seed_differs(tmp_path: Path) -> None:
    a = run(DatagenConfig(customers=300, seed=3, out_dir=tmp_path / "a"))
    b = run(DatagenConfig(customers=300, seed=3, out_dir=tmp_path / "b"))
    c = run(DatagenConfig(customers=300, seed=4, out_dir=tmp_path / "c"))
    for table in TABLES:
        assert pq.read_table(a / f"{table}.parquet").equals(pq.read_table(b / f"{table}.parquet")), table
    assert not pq.read_table(a / "viewing_sessions.parquet").equals(pq.read_table(c / "viewing_sessions.parquet"))
    assert not np.array_equal(read(a, "customers")["plan"], read(c, "customers")["plan"])


def test_bad_config_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="customers"):
        DatagenConfig(customers=0, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="end_date"):
        DatagenConfig(end_date="next tuesday", out_dir=tmp_path)
