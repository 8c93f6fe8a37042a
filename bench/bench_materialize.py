"""Materialization throughput: Feast's default engine (before) vs the fast Redis loader (after).

    .venv/bin/python bench/bench_materialize.py [--before-customers 10000] [--after-customers 1000000]

Feature tables are synthetic, shaped by the applied registry (all 7 online views: 5
legitimate-interest views with 91 features + consent/suppression status), one weekly
snapshot. A private redis-server runs on a free loopback port and is stopped at the end.
Target: 1,000,000 customers with every legitimate-interest feature in Redis in <= 300 s.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lookalike.contract import load_contract  # noqa: E402
from lookalike.feast_utils import (  # noqa: E402
    DEFAULT_REPO,
    feast_apply,
    open_store,
    prepare_repo,
    write_synthetic_feature_tables,
)
from lookalike.local_redis import LocalRedis  # noqa: E402
from lookalike.materialize import MaterializeConfig, online_views, run  # noqa: E402
from lookalike.online import OnlineFeatureReader  # noqa: E402
from lookalike.snapshot import build_point_in_time_features  # noqa: E402

SNAPSHOT = "2026-11-22"
TARGET_CUSTOMERS = 1_000_000
TARGET_SECONDS = 300.0


def build(workdir: Path, customers: int, online: str, connection: str | None) -> Path:
    data_dir = workdir / "features"
    repo = prepare_repo(DEFAULT_REPO, workdir / "repo", online=online, redis_connection=connection)
    feast_apply(repo, data_dir=data_dir)
    store = open_store(repo)
    started = time.perf_counter()
    write_synthetic_feature_tables(online_views(store), np.arange(1, customers + 1), [SNAPSHOT], data_dir,
                                   null_fraction=0.01)
    print(f"  generated {customers:,} customers of synthetic tables in {time.perf_counter() - started:.1f}s")
    return repo


def measure(repo: Path, engine: str, customers: int, label: str) -> float:
    started = time.perf_counter()
    report = run(MaterializeConfig(repo=repo, end_date=SNAPSHOT, engine=engine, chunk_rows=20_000))
    seconds = time.perf_counter() - started
    rows = sum(v.rows for v in report.views)
    print(f"  {label:34s} {customers:>9,} customers  {rows:>9,} view rows  {seconds:8.1f}s  "
          f"{customers / seconds:>10,.0f} customers/s  {rows / seconds:>10,.0f} view rows/s")
    return seconds


def verify(repo: Path, customers: int) -> None:
    store = open_store(repo)
    contract = load_contract(store, "lookalike_legit_v1")
    sample = np.random.default_rng(0).choice(np.arange(1, customers + 1), size=200, replace=False)
    online, found = OnlineFeatureReader(store, contract).read(sample)
    offline = build_point_in_time_features(
        store, contract, pd.DataFrame({"customer_id": sample, "event_timestamp": pd.Timestamp(SNAPSHOT, tz="UTC")})
    ).drop(columns=["event_timestamp"])
    pd.testing.assert_frame_equal(online, offline)
    assert found.all()
    print("  verified: 200 sampled customers read back by get_online_features equal the offline values")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-customers", type=int, default=10_000)
    parser.add_argument("--after-customers", type=int, default=TARGET_CUSTOMERS)
    parser.add_argument("--skip-before", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_materialize-"))
    redis = LocalRedis(root, ["--hash-max-listpack-entries", "256"]).start()
    port = redis.port
    try:
        print(f"online views: 7 (5 legitimate-interest, 91 features + consent/suppression); snapshot {SNAPSHOT}")
        if not args.skip_before:
            print("before (Feast default materialization):")
            n = args.before_customers
            sqlite_repo = build(root / "sqlite", n, "sqlite", None)
            measure(sqlite_repo, "feast", n, "feast -> sqlite")
            redis_repo = build(root / "redis_feast", n, "redis", f"127.0.0.1:{port},db=1")
            before = measure(redis_repo, "feast", n, "feast -> redis")
            print(f"  extrapolated to {TARGET_CUSTOMERS:,}: {before / n * TARGET_CUSTOMERS:,.0f}s "
                  f"(target {TARGET_SECONDS:.0f}s, ratio {before / n * TARGET_CUSTOMERS / TARGET_SECONDS:.1f}x)")
        print("after (fast Redis loader, lookalike materialize default for Redis):")
        n = args.after_customers
        fast_repo = build(root / "redis_fast", n, "redis", f"127.0.0.1:{port},db=2")
        after = measure(fast_repo, "fast", n, "fast -> redis")
        scaled = after / n * TARGET_CUSTOMERS
        print(f"  {TARGET_CUSTOMERS:,} customers: {scaled:.1f}s vs target {TARGET_SECONDS:.0f}s "
              f"-> ratio to target {scaled / TARGET_SECONDS:.2f} ({'MET' if scaled <= TARGET_SECONDS else 'MISSED'})")
        verify(fast_repo, n)
    finally:
        redis.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
