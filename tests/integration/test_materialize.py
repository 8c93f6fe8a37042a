"""Materialization into SQLite and a real Redis: online values equal the latest offline
values, the fast loader writes exactly Feast's bytes, and serving reads fail cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from lookalike.contract import load_contract
from lookalike.feast_utils import open_store, open_store_with_online
from lookalike.materialize import MaterializeConfig, run
from lookalike.online import OnlineFeatureReader, OnlineStoreUnavailable
from lookalike.snapshot import build_point_in_time_features
from tests.fixtures.data import RUN_DATE
from tests.fixtures.feast import SYNTHETIC_CUSTOMERS, SYNTHETIC_MISSING_DEVICES, apply_repo

pytestmark = pytest.mark.integration

ONLINE_VIEWS = ["consent_status", "content_consumption", "devices", "mobile_roaming", "profile",
                "suppression_list", "tech_config"]
SAMPLE = np.array([1, 2, *SYNTHETIC_MISSING_DEVICES, 40, 77, 150, SYNTHETIC_CUSTOMERS])
UNKNOWN = 10_000_000


def _offline_latest(store, contract) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    entity_df = pd.DataFrame({"customer_id": SAMPLE, "event_timestamp": pd.Timestamp(RUN_DATE, tz="UTC")})
    return build_point_in_time_features(store, contract, entity_df).drop(columns=["event_timestamp"])


@pytest.fixture(scope="module")
def sqlite_repo(synthetic_repo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = apply_repo(tmp_path_factory.mktemp("sqlite") / "repo", synthetic_repo_dir.parent / "features")
    report = run(MaterializeConfig(repo=repo, end_date=RUN_DATE))
    assert report.engine == "feast" and [v.view for v in report.views] == ONLINE_VIEWS
    return repo


def test_sqlite_online_values_equal_latest_offline_values(sqlite_repo: Path) -> None:
    store = open_store(sqlite_repo)
    contract = load_contract(store, "lookalike_legit_v1")
    online, found = OnlineFeatureReader(store, contract).read([*SAMPLE, UNKNOWN])
    assert found.tolist() == [True] * len(SAMPLE) + [False]
    assert online.iloc[-1][contract.columns].isna().all()
    pd.testing.assert_frame_equal(online.iloc[:-1].reset_index(drop=True), _offline_latest(store, contract))


def test_navigation_and_labels_never_go_online(sqlite_repo: Path) -> None:
    import sqlite3

    with sqlite3.connect(sqlite_repo / "data" / "online_store.db") as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}

        def rows(view: str) -> int:
            table = f"lookalike_{view}"
            return connection.execute(f"select count(*) from {table}").fetchone()[0] if table in tables else 0

        assert rows("profile") > 0 and rows("consent_status") > 0
        assert rows("web_navigation") == 0 and rows("segment_labels") == 0


def test_status_lookup_reads_consent_and_suppression(sqlite_repo: Path, synthetic_repo_dir: Path) -> None:
    import pyarrow.dataset as ds

    store = open_store(sqlite_repo)
    reader = OnlineFeatureReader(store, load_contract(store, "lookalike_legit_v1"))
    status = reader.read_status([*SAMPLE, UNKNOWN])
    consent = ds.dataset(synthetic_repo_dir.parent / "features" / "consent_status").to_table().to_pandas()
    latest = consent[consent["event_timestamp"] == pd.Timestamp(RUN_DATE, tz="UTC")].set_index("customer_id")
    assert status["opt_in"].tolist()[:-1] == latest.loc[SAMPLE, "opt_in"].tolist()
    assert status.iloc[-1][["opt_in", "suppressed"]].tolist() == [False, False]


def _hashes(client: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    """Feast's entity hashes (the materialization progress mark is lookalike's own key)."""
    return {key: client.hgetall(key) for key in client.scan_iter(count=1000) if not key.startswith(b"lookalike:")}


def test_fast_redis_loader_writes_exactly_what_feast_writes(synthetic_repo_dir: Path, redis_server,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    data_dir = synthetic_repo_dir.parent / "features"
    feast_conn, fast_conn = f"{redis_server.connection_string},db=1", f"{redis_server.connection_string},db=2"
    feast_repo = apply_repo(tmp_path / "feast", data_dir, online="redis", redis_connection=feast_conn)
    fast_repo = apply_repo(tmp_path / "fast", data_dir, online="redis", redis_connection=fast_conn)
    assert run(MaterializeConfig(repo=feast_repo, end_date=RUN_DATE, engine="feast")).engine == "feast"
    report = run(MaterializeConfig(repo=fast_repo, end_date=RUN_DATE, chunk_rows=64))
    assert report.engine == "fast" and {v.view: v.rows for v in report.views}["profile"] == SYNTHETIC_CUSTOMERS

    written_by_feast = _hashes(redis.Redis(host="127.0.0.1", port=redis_server.port, db=1))
    written_fast = _hashes(redis.Redis(host="127.0.0.1", port=redis_server.port, db=2))
    assert len(written_fast) == SYNTHETIC_CUSTOMERS
    assert written_fast == written_by_feast

    store = open_store(fast_repo)
    contract = load_contract(store, "lookalike_legit_v1")
    online, found = OnlineFeatureReader(store, contract).read([*SAMPLE, UNKNOWN])
    assert found.tolist() == [True] * len(SAMPLE) + [False]
    pd.testing.assert_frame_equal(online.iloc[:-1].reset_index(drop=True), _offline_latest(store, contract))
    # The interval is recorded, so an incremental run starts where this one ended.
    assert store.get_feature_view("profile").materialization_intervals


def test_redis_down_raises_online_store_unavailable(synthetic_repo_dir: Path, redis_server) -> None:  # type: ignore[no-untyped-def]
    store = open_store_with_online(synthetic_repo_dir, "redis", f"{redis_server.connection_string},db=3")
    reader = OnlineFeatureReader(store, load_contract(store, "lookalike_legit_v1"))
    frame, found = reader.read([1, 2])
    assert not found.any()  # nothing materialized into db 3: unknown customers, not an error
    redis_server.stop()
    try:
        with pytest.raises(OnlineStoreUnavailable):
            reader.read([1, 2])
        with pytest.raises(OnlineStoreUnavailable):
            reader.read_status([1])
    finally:
        redis_server.start()


def test_fixture_materialized_repo_on_spark_tables(materialized_repo_dir: Path) -> None:
    store = open_store(materialized_repo_dir)
    contract = load_contract(store, "lookalike_legit_v1")
    frame, found = OnlineFeatureReader(store, contract).read([1, 2, 3, UNKNOWN])
    assert found.tolist() == [True, True, True, False]
    assert frame.loc[:2, "profile__plan"].notna().all()
