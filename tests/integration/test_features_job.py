"""`lookalike features` end to end through the CLI, and bad input that must not clobber output."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from lookalike.artifacts import read_manifest, sha256_tree
from lookalike.cli import main
from lookalike.datagen import DatagenConfig
from lookalike.datagen import run as datagen
from lookalike.errors import DataValidationError
from spark_jobs.runner import FEATURE_TABLES, FeaturesConfig
from spark_jobs.runner import run as build_features
from spark_jobs.transforms import FEATURE_SCHEMAS, LEGITIMATE_INTEREST_TABLES
from tests.fixtures.data import LABEL_DATE, RUN_DATE

pytestmark = pytest.mark.integration

TS = pa.timestamp("us", tz="UTC")


@pytest.fixture(scope="module")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return datagen(DatagenConfig(customers=300, seed=5, out_dir=tmp_path_factory.mktemp("tiny") / "raw"))


def test_cli_builds_every_table(tiny_raw: Path, tmp_path: Path, spark) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "features"
    rc = main(["features", "--raw-dir", str(tiny_raw), "--out-dir", str(out), "--start-date", LABEL_DATE,
               "--end-date", RUN_DATE, "shuffle_partitions=2"])
    assert rc == 0
    manifest = read_manifest(out, "feature_tables")
    assert manifest["snapshot_dates"] == [LABEL_DATE, RUN_DATE]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(FEATURE_TABLES)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    n_features = sum(len(FEATURE_SCHEMAS[t]) for t in LEGITIMATE_INTEREST_TABLES)
    assert 85 <= n_features <= 110
    for table in FEATURE_TABLES:
        data = pq.read_table(out / table)
        assert data.schema.field("customer_id").type == pa.int64()
        assert data.schema.field("event_timestamp").type == TS
        assert data.schema.field("created_timestamp").type == TS
        assert set(FEATURE_SCHEMAS[table]) <= set(data.schema.names)
        keys = data.select(["customer_id", "event_timestamp"]).to_pandas()
        assert not keys.duplicated().any(), table
        dates = {t.date().isoformat() for t in pc.unique(data["event_timestamp"]).to_pylist()}
        assert dates == {LABEL_DATE, RUN_DATE}, table
        assert manifest["tables"][table]["rows"] == data.num_rows
    # Every customer signed up by the run date has one profile row there.
    customers = pd.read_parquet(tiny_raw / "customers.parquet")
    known = customers.loc[customers["signup_date"] <= pd.Timestamp(RUN_DATE, tz="UTC"), "customer_id"].nunique()
    profile = pd.read_parquet(out / "profile")
    assert (profile["event_timestamp"] == pd.Timestamp(RUN_DATE, tz="UTC")).sum() == known
    labels = pd.read_parquet(out / "segment_labels")
    assert labels["segments"].map(len).between(1, 6).all()
    nav = pd.read_parquet(out / "web_navigation")
    consent = pd.read_parquet(out / "consent_status")
    opted = consent.loc[consent["opt_in"], ["customer_id", "event_timestamp"]]
    assert len(nav.merge(opted)) == len(nav) == len(opted)


def test_feature_fixture_covers_three_snapshots(feature_tables_dir: Path) -> None:
    manifest = read_manifest(feature_tables_dir, "feature_tables")
    assert manifest["snapshot_dates"] == ["2026-11-08", LABEL_DATE, RUN_DATE]
    assert manifest["tables"]["profile"]["rows"] > 5_900


def _rewrite(raw: Path, table: str, change) -> None:  # type: ignore[no-untyped-def]
    path = raw / f"{table}.parquet"
    pq.write_table(change(pq.read_table(path)), path)


def _earlier_open_copy(consent: pa.Table) -> pa.Table:
    """A second open-ended consent row, 1 microsecond older than an existing open one."""
    row = consent.filter(pc.is_null(consent["valid_to"])).slice(0, 1)
    earlier = pc.cast(pc.subtract(pc.cast(row["valid_from"], pa.int64()), 1), TS)
    return row.set_column(row.schema.get_field_index("valid_from"), "valid_from", earlier)


@pytest.fixture(scope="module")
def good_output(tiny_raw: Path, tmp_path_factory: pytest.TempPathFactory, spark) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("good") / "features"
    build_features(FeaturesConfig(raw_dir=tiny_raw, out_dir=out, start_date=RUN_DATE, end_date=RUN_DATE,
                                  shuffle_partitions=2), spark=spark)
    return out


@pytest.mark.parametrize(
    ("table", "change", "message"),
    [
        ("viewing_sessions", lambda t: t.drop_columns(["minutes"]), r"'viewing_sessions'.*missing column.*'minutes'"),
        ("devices", lambda t: t.set_column(t.schema.get_field_index("hw_generation"), "hw_generation",
                                           pc.cast(t["hw_generation"], pa.string())),
         r"'devices'.*column 'hw_generation' has type string, expected integer"),
        ("customers", lambda t: pa.concat_tables([t, t.slice(0, 1)]),
         r"'customers'.*duplicate key \(customer_id, updated_at\)"),
        # Two open consent rows for one customer only show up as duplicate output keys.
        ("consent", lambda t: pa.concat_tables([t, _earlier_open_copy(t)]),
         r"'consent_status'.*duplicate key \(customer_id, event_timestamp\)"),
    ],
    ids=["missing-column", "wrong-type", "duplicate-input-key", "duplicate-output-key"],
)
def test_bad_input_fails_cleanly_and_keeps_previous_output(
    tiny_raw: Path, good_output: Path, tmp_path: Path, spark, table: str, change, message: str  # type: ignore[no-untyped-def]
) -> None:
    out = tmp_path / "features"
    shutil.copytree(good_output, out)
    before = sha256_tree(out)
    bad_raw = tmp_path / "bad_raw"
    shutil.copytree(tiny_raw, bad_raw)
    _rewrite(bad_raw, table, change)
    config = FeaturesConfig(raw_dir=bad_raw, out_dir=out, start_date=RUN_DATE, end_date=RUN_DATE,
                            shuffle_partitions=2)
    with pytest.raises(DataValidationError, match=message):
        build_features(config, spark=spark)
    assert sha256_tree(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_reports_missing_table_in_one_line(tmp_path: Path, capsys, spark) -> None:  # type: ignore[no-untyped-def]
    rc = main(["features", "--raw-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "out")])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: table 'customers': not found")
    assert not (tmp_path / "out").exists()
