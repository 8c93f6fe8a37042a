"""Feature build benchmark: datagen + the Spark feature job for one snapshot date.

    .venv/bin/python bench/bench_features.py                 # 1,000,000 customers (~50M sessions)
    .venv/bin/python bench/bench_features.py --customers 200000

Prints wall time, rows/s and the ratio to target (< 1.0 = within target). Targets: the
Spark job for one snapshot under 10 minutes at 1M customers; datagen in a few (5) minutes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from lookalike.datagen import DatagenConfig
from lookalike.datagen import run as datagen
from spark_jobs.runner import FeaturesConfig
from spark_jobs.runner import run as build_features

FEATURES_TARGET_S = 600.0
DATAGEN_TARGET_S = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--snapshot", default="2026-11-22", help="the one snapshot date (= datagen end date)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data here (default: temp, deleted)")
    parser.add_argument("--shuffle-partitions", type=int, default=16)
    parser.add_argument("--driver-memory", default="6g")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-features-"))
    try:
        started = time.perf_counter()
        raw = datagen(DatagenConfig(customers=args.customers, seed=args.seed, end_date=args.snapshot,
                                    out_dir=workdir / "raw"))
        datagen_s = time.perf_counter() - started
        sessions = pq.ParquetFile(raw / "viewing_sessions.parquet").metadata.num_rows
        raw_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in raw.glob("*.parquet"))

        started = time.perf_counter()
        build_features(FeaturesConfig(raw_dir=raw, out_dir=workdir / "features", start_date=args.snapshot,
                                      end_date=args.snapshot, shuffle_partitions=args.shuffle_partitions,
                                      driver_memory=args.driver_memory))
        features_s = time.perf_counter() - started
        manifest = json.loads((workdir / "features" / "manifest.json").read_text())

        print(f"customers            {args.customers:,}")
        print(f"raw rows             {raw_rows:,} (viewing sessions {sessions:,})")
        print(f"datagen              {datagen_s:8.1f} s  {raw_rows / datagen_s:12,.0f} rows/s  "
              f"ratio to {DATAGEN_TARGET_S:.0f}s target {datagen_s / DATAGEN_TARGET_S:.2f}")
        print(f"spark features       {features_s:8.1f} s  {sessions / features_s:12,.0f} sessions/s  "
              f"ratio to {FEATURES_TARGET_S:.0f}s target {features_s / FEATURES_TARGET_S:.2f}")
        for table, seconds in manifest["seconds"].items():
            print(f"  {table:22s} {seconds:8.1f} s  {manifest['tables'][table]['rows']:>12,} rows")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
