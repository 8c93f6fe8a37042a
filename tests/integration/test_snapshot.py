"""Point-in-time training snapshots: who is in, what they get, nothing from the future."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from lookalike.artifacts import verify_manifest
from lookalike.contract import load_contract
from lookalike.errors import DataValidationError
from lookalike.feast_utils import open_store
from lookalike.snapshot import SnapshotConfig, build_point_in_time_features, run
from tests.fixtures.data import LABEL_DATE
from tests.fixtures.feast import SYNTHETIC_CUSTOMERS, SYNTHETIC_MISSING_DEVICES, apply_repo

pytestmark = pytest.mark.integration


def _rows_at(data_dir: Path, table: str, date: str) -> pd.DataFrame:
    frame = ds.dataset(data_dir / table, format="parquet").to_table().to_pandas()
    return frame[frame["event_timestamp"] == pd.Timestamp(date, tz="UTC")].set_index("customer_id")


@pytest.fixture(scope="module")
def synthetic_snapshot(synthetic_repo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(SnapshotConfig(repo=synthetic_repo_dir, label_date=LABEL_DATE, out=tmp_path_factory.mktemp("snap")))


def test_snapshot_holds_consenting_customers_with_their_label_date_values(
    synthetic_repo_dir: Path, synthetic_snapshot: Path
) -> None:
    data_dir = synthetic_repo_dir.parent / "features"
    manifest = verify_manifest(synthetic_snapshot, "training_snapshot")
    frame = pd.read_parquet(synthetic_snapshot / "data.parquet")
    consent = _rows_at(data_dir, "consent_status", LABEL_DATE)
    suppressed = _rows_at(data_dir, "suppression_list", LABEL_DATE)
    expected = set(consent.index[consent["opt_in"]]) - set(suppressed.index[suppressed["suppressed"]])
    assert set(frame["customer_id"]) == expected and len(frame) == manifest["row_count"]
    assert (frame["event_timestamp"] == pd.Timestamp(LABEL_DATE, tz="UTC")).all()

    contract = load_contract(open_store(synthetic_repo_dir), "lookalike_legit_v1")
    assert list(frame.columns) == ["customer_id", "event_timestamp", *contract.columns, "segments"]
    assert manifest["feature_service"] == "lookalike_legit_v1" and manifest["feature_service_version"] == "1"
    assert manifest["contract"] == contract.to_dict() and manifest["label_date"] == LABEL_DATE
    labels = _rows_at(data_dir, "segment_labels", LABEL_DATE)
    for _, row in frame.head(20).iterrows():
        assert list(row["segments"]) == sorted(labels.loc[row["customer_id"], "segments"])
    assert set(manifest["segment_vocabulary"]) >= {s for row in frame["segments"] for s in row}
    assert manifest["segment_vocabulary"] == sorted(manifest["segment_vocabulary"])


def test_no_feature_value_from_after_the_label_date(synthetic_repo_dir: Path, tmp_path: Path) -> None:
    """Rows dated one second after the label date carry a sentinel that must never appear."""
    data_dir = tmp_path / "features"
    shutil.copytree(synthetic_repo_dir.parent / "features", data_dir)
    sentinel = 987654.0
    for table in ("content_consumption", "mobile_roaming"):
        source = pq.read_table(next((data_dir / table).glob("part-001-*.parquet")))  # the LABEL_DATE snapshot
        future = pa.array(np.full(source.num_rows, np.datetime64(f"{LABEL_DATE}T00:00:01", "us")),
                          pa.timestamp("us", "UTC"))
        for name in ("event_timestamp", "created_timestamp"):
            source = source.set_column(source.schema.get_field_index(name), name, future)
        for name in source.column_names:
            if pa.types.is_floating(source.schema.field(name).type):
                source = source.set_column(source.schema.get_field_index(name), name,
                                           pa.array(np.full(source.num_rows, sentinel)))
        pq.write_table(source, data_dir / table / "part-zz-future.parquet")
    repo = apply_repo(tmp_path / "repo", data_dir)
    snapshot = run(SnapshotConfig(repo=repo, label_date=LABEL_DATE, out=tmp_path / "out"))
    frame = pd.read_parquet(snapshot / "data.parquet")
    numeric = frame.select_dtypes("number").drop(columns=["customer_id"])
    assert not (numeric == sentinel).any().any()
    # ...while the same rows are picked up by a snapshot one day later (the sentinel is real data).
    later = run(SnapshotConfig(repo=repo, label_date="2026-11-16", out=tmp_path / "out"))
    assert (pd.read_parquet(later / "data.parquet")["content_consumption__minutes_7d"] == sentinel).any()


def test_missing_view_rows_are_counted_and_kept_with_nulls(synthetic_repo_dir: Path) -> None:
    store = open_store(synthetic_repo_dir)
    contract = load_contract(store, "lookalike_legit_v1")
    ids = [*SYNTHETIC_MISSING_DEVICES, 10, 11, 123456789]  # the last is unknown to every view
    entity_df = pd.DataFrame({"customer_id": ids, "event_timestamp": pd.Timestamp(LABEL_DATE, tz="UTC")})
    frame = build_point_in_time_features(store, contract, entity_df)
    assert list(frame["customer_id"]) == ids
    devices = [c for c in contract.columns if c.startswith("devices__")]
    assert frame.loc[frame["customer_id"].isin(SYNTHETIC_MISSING_DEVICES), devices].isna().all().all()
    assert frame.loc[frame["customer_id"] == 10, "profile__plan"].notna().all()
    missing = frame.attrs["rows_missing_features"]
    assert missing["devices"] == len(SYNTHETIC_MISSING_DEVICES) + 1
    assert missing["profile"] == 1 and missing["content_consumption"] == 1


def test_snapshot_manifest_reports_missing_rows(synthetic_repo_dir: Path, synthetic_snapshot: Path) -> None:
    manifest = json.loads((synthetic_snapshot / "manifest.json").read_text())
    frame = pd.read_parquet(synthetic_snapshot / "data.parquet")
    in_snapshot = set(frame["customer_id"]) & set(SYNTHETIC_MISSING_DEVICES)
    assert manifest["rows_missing_features"]["devices"] == len(in_snapshot)
    assert set(manifest["rows_missing_features"]) == {"content_consumption", "devices", "mobile_roaming",
                                                      "profile", "tech_config"}


def test_no_opt_in_customer_at_the_date_is_a_clear_error(synthetic_repo_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="no opt-in customers"):
        run(SnapshotConfig(repo=synthetic_repo_dir, label_date="2025-01-01", out=tmp_path))
    assert not (tmp_path / "lookalike_legit_v1").exists()


def test_features_for_any_customer_set_at_a_run_date(synthetic_repo_dir: Path) -> None:
    store = open_store(synthetic_repo_dir)
    contract = load_contract(store, "lookalike_legit_v1")
    entity_df = pd.DataFrame({"customer_id": np.arange(1, SYNTHETIC_CUSTOMERS + 1),
                              "event_timestamp": pd.Timestamp("2026-11-22", tz="UTC")})
    frame = build_point_in_time_features(store, contract, entity_df)
    assert len(frame) == SYNTHETIC_CUSTOMERS
    assert frame.attrs["rows_missing_features"]["profile"] == 0


def test_fixture_snapshot_on_spark_tables(training_snapshot_dir: Path) -> None:
    manifest = verify_manifest(training_snapshot_dir, "training_snapshot")
    frame = pd.read_parquet(training_snapshot_dir / "data.parquet")
    assert manifest["row_count"] == len(frame) > 100
    assert frame["segments"].map(len).gt(0).mean() > 0.9
    assert len(manifest["segment_vocabulary"]) >= 50


@pytest.fixture(scope="module")
def spark_offline_repo(synthetic_repo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic repo's tables behind Feast's Spark offline store (SparkSources)."""
    from lookalike.feast_utils import DEFAULT_REPO, feast_apply, prepare_repo

    repo = prepare_repo(DEFAULT_REPO, tmp_path_factory.mktemp("spark_offline") / "repo", offline="spark")
    feast_apply(repo, data_dir=synthetic_repo_dir.parent / "features")
    return repo


def _no_driver_collect(monkeypatch: pytest.MonkeyPatch, spark) -> list[int]:  # type: ignore[no-untyped-def]
    """Make every population-sized path to the driver fail; return the sizes of the collects that remain."""
    from feast.infra.offline_stores.offline_store import RetrievalJob

    import lookalike.snapshot as snapshot_module

    DataFrame = type(spark.range(1))  # the concrete class (pyspark.sql.classic), whose methods run

    def refuse(name: str):  # type: ignore[no-untyped-def]
        def raising(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"{name} called while building a Spark snapshot")
        return raising

    for name in ("toPandas", "toArrow", "toLocalIterator", "_collect_as_arrow"):
        monkeypatch.setattr(DataFrame, name, refuse(f"DataFrame.{name}"))
    for name in ("to_df", "to_arrow"):
        monkeypatch.setattr(RetrievalJob, name, refuse(f"RetrievalJob.{name}"))
    for name in ("read_view_as_of", "build_point_in_time_features", "_rows_with_data", "_labels_as_of"):
        monkeypatch.setattr(snapshot_module, name, refuse(name))
    sizes: list[int] = []
    original_collect = DataFrame.collect

    def counting_collect(self: Any) -> list[Any]:
        rows = original_collect(self)
        sizes.append(len(rows))
        return rows

    monkeypatch.setattr(DataFrame, "collect", counting_collect)
    return sizes


def test_spark_offline_store_snapshot_is_written_by_spark_without_collecting(
    spark, spark_offline_repo: Path, synthetic_snapshot: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from training.data import load_snapshot

    collected = _no_driver_collect(monkeypatch, spark)
    snapshot = run(SnapshotConfig(repo=spark_offline_repo, label_date=LABEL_DATE, out=tmp_path))
    with pytest.raises(AssertionError, match="toPandas"):  # the guard holds on the frames Spark hands out
        spark.range(3).toPandas()
    monkeypatch.undo()

    parts = sorted((snapshot / "data.parquet").glob("part-*.parquet"))
    assert parts and (snapshot / "data.parquet" / "_SUCCESS").exists()  # Spark's writer, not pandas
    manifest = verify_manifest(snapshot, "training_snapshot")
    local_manifest = verify_manifest(synthetic_snapshot, "training_snapshot")
    assert manifest["written_by"] == "spark"
    # The driver saw counts, a timestamp range, and the segment vocabulary (no catalog here): never rows.
    assert collected and max(collected) <= len(manifest["segment_vocabulary"]) < manifest["row_count"]
    for key in ("row_count", "rows_missing_features", "rows_dropped_by_feast", "customers_opted_in",
                "customers_suppressed_excluded", "customers_without_segments", "segment_vocabulary", "contract"):
        assert manifest[key] == local_manifest[key], key
    assert manifest["rows_missing_features"]["devices"] > 0  # the missing-row path was exercised

    from_spark = load_snapshot(snapshot, min_customers=1)
    from_file = load_snapshot(synthetic_snapshot, min_customers=1)
    assert list(from_spark.frame.columns) == list(from_file.frame.columns)
    assert dict(from_spark.frame.dtypes) == dict(from_file.frame.dtypes)
    left = from_spark.frame.sort_values("customer_id").reset_index(drop=True)
    right = from_file.frame.sort_values("customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(left.drop(columns="segments"), right.drop(columns="segments"))
    assert [list(s) for s in left["segments"]] == [list(s) for s in right["segments"]]
    np.testing.assert_array_equal(from_spark.label_matrix()[np.argsort(from_spark.customer_ids)],
                                  from_file.label_matrix()[np.argsort(from_file.customer_ids)])


def test_training_reads_the_snapshot_in_streamed_batches(synthetic_snapshot: Path) -> None:
    from training.data import read_snapshot_frame

    whole = pd.read_parquet(synthetic_snapshot / "data.parquet")
    streamed = read_snapshot_frame(synthetic_snapshot / "data.parquet", batch_rows=7)
    pd.testing.assert_frame_equal(streamed.drop(columns="segments"), whole.drop(columns="segments"))
    assert [list(s) for s in streamed["segments"]] == [list(s) for s in whole["segments"]]


def test_spark_snapshot_to_a_uri_is_swapped_in_by_its_pointer(
    spark, spark_offline_repo: Path, synthetic_snapshot: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Spark's writer straight to ``file://<root>/<service>/<date>/snapshot.<id>/``; current.json last."""
    import lookalike.snapshot as snapshot_module
    from lookalike.uri_outputs import resolve
    from training.data import load_snapshot

    out = f"file://{tmp_path / 'snapshots'}"
    written = run(SnapshotConfig(repo=spark_offline_repo, label_date=LABEL_DATE, out=out))
    from_file = load_snapshot(synthetic_snapshot, min_customers=1)
    date_root = f"{out}/{from_file.contract.service_name}/{LABEL_DATE}"
    assert resolve(date_root) == written
    local_dir = Path(str(written).removeprefix("file://"))
    assert sorted((local_dir / "data.parquet").glob("part-*.parquet"))  # Spark's part files
    from_uri = load_snapshot(date_root, min_customers=1)
    assert from_uri.manifest["written_by"] == "spark" and from_uri.path == written
    left = from_uri.frame.sort_values("customer_id").reset_index(drop=True)
    right = from_file.frame.sort_values("customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(left.drop(columns="segments"), right.drop(columns="segments"))

    # Spark wrote the data, then the run died before the manifest: the pointer still names the first
    def die(*args: Any, **kwargs: Any) -> None:
        raise OSError("executor lost before the manifest was written")

    monkeypatch.setattr(snapshot_module, "write_uri_manifest", die)
    with pytest.raises(OSError, match="executor lost"):
        run(SnapshotConfig(repo=spark_offline_repo, label_date=LABEL_DATE, out=out))
    assert resolve(date_root) == written
    assert sorted(p.name for p in local_dir.parent.iterdir()) == sorted(["current.json", local_dir.name])
