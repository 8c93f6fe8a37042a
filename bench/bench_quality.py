"""Assignment quality of every method and of the selected system, mean ± sd over seeds.

For each base size: ``lookalike datagen`` (seed 42, like the demo) -> Spark feature tables ->
``feast apply`` -> point-in-time snapshot at the run date. Then per seed: train the two-tower
model with that seed *and split seed* (demo schedule: ``epochs=8``, 60k pairs/epoch), build
the bundle exactly as ``lookalike build-index`` does (out-of-sample scorer selection on the
non-test anchors) and score every method on the seed's test split with
``index_builder.evaluate.compare_methods`` -- the same code as the weekly report.

    python bench/bench_quality.py --customers 5000 20000 --seeds 0 1 2 --workdir /tmp/quality-bench

Prints one table per size (micro-F1 / macro-F1, mean ± sd) and writes ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

RUN_DATE = "2026-11-22"
FEATURE_START = "2026-11-08"


def prepare_base(customers: int, workdir: Path) -> tuple[Path, Path]:
    """Raw data, feature tables, applied repo and snapshot for one base size (cached)."""
    from lookalike.datagen import DatagenConfig
    from lookalike.datagen import run as datagen_run
    from lookalike.feast_utils import DEFAULT_REPO, feast_apply, prepare_repo
    from lookalike.snapshot import SnapshotConfig
    from lookalike.snapshot import run as snapshot_run
    from spark_jobs.runner import FeaturesConfig
    from spark_jobs.runner import run as features_run

    base = workdir / f"c{customers}"
    done = base / "snapshot_dir.txt"
    if done.is_file():
        return base / "repo", Path(done.read_text().strip())
    raw, features = base / "raw", base / "features"
    datagen_run(DatagenConfig(customers=customers, seed=42, end_date=RUN_DATE, out_dir=raw))
    features_run(FeaturesConfig(raw_dir=raw, out_dir=features, start_date=FEATURE_START, end_date=RUN_DATE))
    repo = prepare_repo(DEFAULT_REPO, base / "repo", online="sqlite")
    feast_apply(repo, data_dir=features)
    snapshot = snapshot_run(SnapshotConfig(repo=repo, label_date=RUN_DATE, out=base / "snapshots"))
    done.write_text(str(snapshot))
    return repo, Path(snapshot)


def one_seed(snapshot_dir: Path, seed: int, out: Path) -> dict[str, Any]:
    from index_builder.build import build_bundle_from_arrays
    from index_builder.bundle import load_bundle
    from index_builder.config import AssignmentParams
    from index_builder.evaluate import compare_methods
    from index_builder.faiss_backend import IndexParams
    from lookalike.config import load_config
    from training.config import TrainConfig
    from training.train import fit

    started = time.perf_counter()
    config = load_config(TrainConfig, Path("configs/training.yaml"), [
        f"snapshot={snapshot_dir}", f"seed={seed}", f"split.seed={seed}", "epochs=8",
        "sampling.pairs_per_epoch=60000", "progress=false"])
    fitted = fit(config)
    encoder, snapshot = fitted.encoder, fitted.snapshot
    trained = time.perf_counter()
    frame = snapshot.frame
    embeddings = encoder.embed(frame)
    features = encoder.feature_matrix(frame)
    labels = snapshot.label_matrix()
    ids = snapshot.customer_ids
    split = encoder.split_of(ids)
    import scipy.sparse as sp

    labels_csr = sp.csr_matrix(labels)
    bundle_dir = out / f"bundle-seed{seed}"
    build_bundle_from_arrays(bundle_dir, embeddings, ids, labels_csr, encoder.segments, split, IndexParams(),
                             AssignmentParams(), features=features, head=encoder.segment_head_arrays(),
                             index_version=f"bench-{seed}", model_version="0", run_date=RUN_DATE)
    built = time.perf_counter()
    bundle = load_bundle(bundle_dir)
    results = compare_methods(bundle, ids, labels_csr, split, embeddings, features,
                              ["raw_feature_knn", "kmeans_propagation"])
    assert bundle.selection is not None
    chosen: dict[str, int] = {}
    for choice in bundle.selection.segments:
        key = choice.scorer if choice.shipped else "not shipped"
        chosen[str(key)] = chosen.get(str(key), 0) + 1
    return {
        "seed": seed, "anchors": int(len(ids)), "test": int((split == "test").sum()),
        "methods": {r.name: {"micro_f1": r.metrics.micro_f1, "macro_f1": r.metrics.macro_f1} for r in results},
        "chosen": chosen,
        # the nested comparison of the selection with each scorer alone, and the micro/macro trade-off
        "guard": bundle.selection.guard.get("chosen", bundle.selection.guard.get("skipped")),
        "nested_cv": bundle.selection.guard.get("nested_cv", {}),
        "micro_weight": bundle.selection.tradeoff.get("weight"),
        "seconds": {"train": round(trained - started, 1), "build": round(built - trained, 1),
                    "evaluate": round(time.perf_counter() - built, 1)},
        "load": os.getloadavg(),
    }


def table(size: int, runs: list[dict[str, Any]]) -> str:
    methods = list(runs[0]["methods"])
    lines = [f"\n{size:,} customers, {len(runs)} seeds ({runs[0]['anchors']:,} opt-in anchors, "
             f"~{runs[0]['test']} test customers per seed)",
             "| method | micro-F1 | macro-F1 |", "|---|---|---|"]
    for name in methods:
        micro = np.array([r["methods"][name]["micro_f1"] for r in runs])
        macro = np.array([r["methods"][name]["macro_f1"] for r in runs])
        label = "**selected (this system)**" if name == "selected" else name
        lines.append(f"| {label} | {micro.mean():.3f} ± {micro.std(ddof=1) if len(runs) > 1 else 0:.3f} | "
                     f"{macro.mean():.3f} ± {macro.std(ddof=1) if len(runs) > 1 else 0:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/quality-bench"))
    args = parser.parse_args()
    os.environ.setdefault("LOOKALIKE_QUIET", "1")
    results: dict[str, Any] = {}
    path = args.workdir / "results.json"
    if path.is_file():
        results = json.loads(path.read_text())
    for size in args.customers:
        repo, snapshot = prepare_base(size, args.workdir)
        runs = results.setdefault(str(size), [])
        for seed in args.seeds:
            if any(r["seed"] == seed for r in runs):
                continue
            print(f"== {size} customers, seed {seed} (load {os.getloadavg()[0]:.1f})", flush=True)
            runs.append(one_seed(snapshot, seed, args.workdir / f"c{size}"))
            print(json.dumps(runs[-1], indent=None), flush=True)
            path.write_text(json.dumps(results, indent=2))
        print(table(size, runs), flush=True)


if __name__ == "__main__":
    main()
