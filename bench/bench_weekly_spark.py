"""Weekly assignment: the local engine vs ``--engine spark`` on ``local[2]``, same data, same run.

    .venv/bin/python bench/bench_weekly_spark.py [--customers 20000] [--master local[2]] [--shard-above-mb 1024]

One Feast repo over synthetic feature tables shaped by the registry (one weekly snapshot,
~35% opt-in, ~3% suppressed), one encoder (fitted preprocessing, the default tower with
random weights: inference cost does not depend on the weights), one index bundle built
from the anchors. Then the assignment step -- point-in-time features of every lookalike
candidate, embed, search, aggregate, threshold, write the unified table -- runs once per
engine on those same inputs, and the two tables are checked equal. Spark session start-up
is timed separately (a cluster keeps its session warm).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index_builder import assign, build, spark_engine  # noqa: E402
from index_builder.bundle import load_bundle  # noqa: E402
from index_builder.config import AssignConfig, AssignmentParams  # noqa: E402
from index_builder.faiss_backend import IndexParams  # noqa: E402
from index_builder.features import point_in_time_features  # noqa: E402
from index_builder.population import load_population, parse_date  # noqa: E402
from lookalike.feast_utils import (  # noqa: E402
    DEFAULT_REPO,
    feast_apply,
    open_store,
    prepare_repo,
    write_synthetic_feature_tables,
)
from training.artifact import LookalikeEncoder  # noqa: E402
from training.config import ModelConfig, PreprocessingConfig  # noqa: E402
from training.model import Tower  # noqa: E402
from training.preprocessing import Preprocessor  # noqa: E402

RUN_DATE = "2026-11-22"


def make_repo(root: Path, customers: int) -> Path:
    data_dir = root / "features"
    repo = prepare_repo(DEFAULT_REPO, root / "repo")
    feast_apply(repo, data_dir=data_dir)
    store = open_store(repo)
    write_synthetic_feature_tables(store.list_feature_views(), np.arange(1, customers + 1, dtype=np.int64),
                                   [RUN_DATE], data_dir, seed=11, null_fraction=0.01)
    rng = np.random.default_rng(5)
    for view, column, share in (("consent_status", "opt_in", 0.35), ("suppression_list", "suppressed", 0.03)):
        for path in sorted((data_dir / view).glob("*.parquet")):
            table = pq.read_table(path)
            flags = pa.array(rng.random(table.num_rows) < share)
            pq.write_table(table.set_column(table.schema.get_field_index(column), column, flags), path)
    return repo


def make_encoder(store: object, population: object, segments: list[str]) -> LookalikeEncoder:
    contract = population.contract  # type: ignore[attr-defined]
    sample = population.customer_ids[:5000]  # type: ignore[attr-defined]
    frame, found = point_in_time_features(store, contract, sample, population.as_of)  # type: ignore[attr-defined]
    preprocessor = Preprocessor.fit(frame[found].reset_index(drop=True), contract, PreprocessingConfig())
    model_config = ModelConfig()
    tower = Tower(preprocessor.dense_dim, preprocessor.cardinalities, model_config)
    metadata = {"model_config": dataclasses.asdict(model_config), "bin_weights": [1.0],
                "split": {"seed": 7, "validation_fraction": 0.15, "test_fraction": 0.15}}
    return LookalikeEncoder(tower, preprocessor, contract, segments, metadata)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--shard-above-mb", type=float, default=1024.0)
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    root = Path(tempfile.mkdtemp(prefix="bench_weekly_spark-"))
    try:
        started = time.perf_counter()
        repo = make_repo(root, args.customers)
        store = open_store(repo)
        population = load_population(store, parse_date(RUN_DATE))
        segments = sorted({s for segs in population.segment_lists for s in segs})
        encoder = make_encoder(store, population, segments)
        anchors = build.collect_anchors(store, population, encoder, 16384)
        bundle_dir = root / "index" / "bench"
        build.build_bundle_from_arrays(
            bundle_dir, anchors.embeddings, anchors.ids, anchors.labels, segments,
            np.flatnonzero(anchors.split == "validation"), IndexParams(), AssignmentParams(),
            index_version="bench", model_version="0", model_name="bench", run_date=RUN_DATE)
        bundle = load_bundle(bundle_dir)
        info = SimpleNamespace(name="bench", version="0")
        candidates = int(population.lookalike_mask.sum())
        print(f"inputs: {args.customers:,} customers, {len(anchors.ids):,} anchors, {candidates:,} lookalike "
              f"candidates, {len(encoder.contract.columns)} features, {len(segments)} segments, "
              f"{bundle.manifest['index_type']} index (prepared in {time.perf_counter() - started:.0f}s, not timed)")
        print(f"load average before: {os.getloadavg()}")

        started = time.perf_counter()
        result = assign.score_customers(store, population, encoder, bundle, 16384)
        table = assign.build_table(population, result, bundle)
        assign.write_segment_table(root / "local", table, run_date=RUN_DATE)
        local_s = time.perf_counter() - started

        from spark_jobs.session import get_spark

        started = time.perf_counter()
        get_spark(args.master, "lookalike-weekly")
        session_s = time.perf_counter() - started
        started = time.perf_counter()
        params = spark_engine.SparkParams(master=args.master, shard_above_mb=args.shard_above_mb)
        spark_engine.run(AssignConfig(repo=repo, date=RUN_DATE), params, population=population,
                         encoder_and_info=(encoder, info), bundle=bundle, output_dir=root / "spark")
        spark_s = time.perf_counter() - started
        print(f"load average after: {os.getloadavg()}")

        local = pq.read_table(root / "local" / "segments.parquet").to_pandas()
        spark = pq.read_table(root / "spark" / "segments.parquet").to_pandas()
        keys = ["customer_id", "segment", "source"]
        pd.testing.assert_frame_equal(local[keys], spark[keys])
        worst = float((local["score"] - spark["score"]).abs().max()) if len(local) else 0.0
        print(f"tables equal: {len(local):,} rows, max score difference {worst:.1e}")
        print(f"{'engine':28s} {'seconds':>8s} {'candidates/s':>13s}")
        print(f"{'local (one process)':28s} {local_s:8.1f} {candidates / local_s:13,.0f}")
        print(f"{'spark ' + args.master:28s} {spark_s:8.1f} {candidates / spark_s:13,.0f}   "
              f"(+ {session_s:.1f}s session start)")
        print(f"ratio spark/local: {spark_s / local_s:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
