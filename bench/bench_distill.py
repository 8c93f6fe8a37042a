"""Teacher-student benchmark: does a teacher that saw the privileged view make a better student?

For each seed (model init and train/validation/test split), on a real snapshot of an applied
repo with a privileged view: trains the teacher, the plain student and every configured
teacher-guided student (``training.distill.fit_distilled``), then scores each on the test
split exactly as the weekly report scores the two-tower model: exact cosine kNN vote of the
k nearest opt-in anchors (self excluded), per-segment thresholds calibrated on the
validation split, micro/macro-F1 on the test split. Segments of kind ``navigation`` in the
catalog (unrecoverable from legitimate-interest data by construction) are reported apart.

Rows: the plain student; the teacher-guided student the validation split picks among the
distilled candidates; what the pipeline would register (plain included as a candidate);
every candidate; the teacher (upper bound: it reads privileged inputs, cannot be served).

    .venv/bin/python bench/bench_distill.py [--customers 20000 | --repo R --snapshot S] [--seeds 1,2,3] [key=value ...]

``--selection`` also scores the student alone, the student with teacher and the teacher under the
assignment selection of issue #9: a bundle is built from each model's anchors exactly as
``lookalike build-index`` does (six candidate scorers per segment, out-of-sample selection on the
non-test anchors) and the selected system is scored on the same test split. Only the tower
scorers (kNN vote, auxiliary head) see the embeddings; the feature scorers see the model's
preprocessed inputs -- for the teacher those include the privileged view (upper bound only).

Without ``--repo``/``--snapshot`` it first builds a demo base of ``--customers`` in a temporary
directory (datagen -> Spark feature tables -> ``feast apply`` -> snapshot at 2026-11-15).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from index_builder.aggregation import calibrate_thresholds, decide
from index_builder.baselines import knn_scores
from index_builder.config import AssignmentParams
from index_builder.evaluate import segment_kinds
from index_builder.metrics import segment_metrics
from lookalike.config import load_config
from training.config import TrainConfig
from training.data import load_snapshot
from training.distill import PLAIN, fit_distilled, read_teacher_inputs

ROOT = Path(__file__).resolve().parents[1]


def knn_test_f1(embeddings: np.ndarray, labels: np.ndarray, split: np.ndarray, columns: np.ndarray,
                params: AssignmentParams) -> dict[str, float]:
    """Test micro/macro-F1 over ``columns`` of the kNN vote, thresholds from validation."""
    anchors = sp.csr_matrix(labels)
    rows = {name: np.flatnonzero(split == name) for name in ("validation", "test")}
    scores = {name: knn_scores(embeddings, anchors, embeddings[r], r, params.k, params.aggregation)
              for name, r in rows.items()}
    calibration = calibrate_thresholds(scores["validation"], labels[rows["validation"]], params.threshold_mode,
                                       params.fixed_threshold, params.threshold_floor, params.min_positives)
    decisions = decide(scores["test"], calibration.thresholds)
    truth = labels[rows["test"]]
    prevalence = labels[split == "train"].mean(axis=0)
    metrics = segment_metrics(truth[:, columns], decisions[:, columns], [str(c) for c in columns],
                              prevalence[columns])
    return {"micro_f1": metrics.micro_f1, "macro_f1": metrics.macro_f1}


def selected_test_f1(encoder: Any, frame: Any, ids: np.ndarray, labels: np.ndarray, split: np.ndarray,
                     groups: dict[str, np.ndarray], segments: list[str], workdir: Path) -> dict[str, float]:
    """Test micro/macro-F1 per segment group of the selected system built from ``encoder``."""
    import tempfile

    from index_builder.build import build_bundle_from_arrays
    from index_builder.bundle import load_bundle
    from index_builder.evaluate import SELECTED, compare_methods
    from index_builder.faiss_backend import IndexParams

    embeddings, features = encoder.embed(frame), encoder.feature_matrix(frame)
    anchors = sp.csr_matrix(labels)
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        bundle_dir = Path(scratch) / "bundle"
        build_bundle_from_arrays(bundle_dir, embeddings, ids, anchors, segments, split, IndexParams(),
                                 AssignmentParams(), features=features, head=encoder.segment_head_arrays(),
                                 index_version="bench-distill", model_version="0", run_date="2026-11-15")
        results = compare_methods(load_bundle(bundle_dir), ids, anchors, split, embeddings, features, [])
    decisions = next(r.test_decisions for r in results if r.name == SELECTED)
    test = split == "test"
    prevalence = labels[split != "test"].mean(axis=0)
    out: dict[str, float] = {}
    for group, columns in groups.items():
        if len(columns):
            metrics = segment_metrics(labels[test][:, columns], np.asarray(decisions)[:, columns],
                                      [segments[c] for c in columns], prevalence[columns])
            out[f"selected.{group}.micro_f1"], out[f"selected.{group}.macro_f1"] = metrics.micro_f1, metrics.macro_f1
    return out


def run_seed(config: TrainConfig, repo: Path, kinds: dict[str, str], params: AssignmentParams,
             selection_workdir: Path | None = None) -> dict[str, Any]:
    snapshot = load_snapshot(config.snapshot or "", config.min_customers)
    inputs = read_teacher_inputs(repo, snapshot)
    if inputs is None:
        raise SystemExit(f"{repo} has no view tagged lookalike_role=privileged")
    started = time.perf_counter()
    result = fit_distilled(config, snapshot, inputs)
    train_s = time.perf_counter() - started
    labels = snapshot.label_matrix()
    split = result.student.encoder.split_of(snapshot.customer_ids)
    navigation = np.array([kinds.get(s) == "navigation" for s in snapshot.vocabulary])
    groups = {"non_navigation": np.flatnonzero(~navigation), "navigation": np.flatnonzero(navigation)}

    def score(embeddings: np.ndarray) -> dict[str, float]:
        out = {}
        for group, columns in groups.items():
            if len(columns):
                out.update({f"{group}.{k}": v for k, v in
                            knn_test_f1(embeddings, labels, split, columns, params).items()})
        return out

    distilled = [c for c in result.candidates if c.key != PLAIN]
    best_distilled = max(distilled, key=lambda c: c.val_knn_micro_f1)
    rows: dict[str, Any] = {}
    for candidate in result.candidates:
        rows[f"candidate {candidate.key}"] = {
            "val_knn_micro_f1": candidate.val_knn_micro_f1,
            **score(result.fits[candidate.key].encoder.embed(snapshot.frame))}
    rows["student alone"] = rows[f"candidate {PLAIN}"]
    rows["student with teacher"] = {**rows[f"candidate {best_distilled.key}"], "chosen": best_distilled.key}
    rows["pipeline choice"] = {**rows[f"candidate {result.chosen.key}"], "chosen": result.chosen.key}
    rows["teacher (upper bound, not servable)"] = {
        "val_knn_micro_f1": result.teacher.best_knn.best,
        **score(result.teacher.encoder.embed(result.teacher_snapshot.frame))}
    if selection_workdir is not None:
        ids = np.asarray(snapshot.customer_ids)
        selected = {"student alone": result.fits[PLAIN].encoder,
                    "student with teacher": result.fits[best_distilled.key].encoder}
        for name, encoder in selected.items():
            rows[name].update(selected_test_f1(encoder, snapshot.frame, ids, labels, split, groups,
                                               list(snapshot.vocabulary), selection_workdir))
        teacher_frame = result.teacher_snapshot.frame
        if list(result.teacher_snapshot.customer_ids) == list(ids):
            rows["teacher (upper bound, not servable)"].update(selected_test_f1(
                result.teacher.encoder, teacher_frame, ids, labels, split, groups, list(snapshot.vocabulary),
                selection_workdir))
    return {"seed": config.seed, "train_s": round(train_s, 1), "customers": len(snapshot.frame),
            "split": {k: int((split == k).sum()) for k in ("train", "validation", "test")}, "rows": rows}


def build_base(customers: int, root: Path) -> tuple[Path, Path]:
    """A demo base as ``make demo`` builds it: (applied repo, snapshot directory)."""
    import shutil

    from lookalike.datagen import DatagenConfig
    from lookalike.datagen import run as datagen_run
    from lookalike.feast_utils import feast_apply
    from lookalike.snapshot import SnapshotConfig
    from lookalike.snapshot import run as snapshot_run
    from spark_jobs.runner import FeaturesConfig
    from spark_jobs.runner import run as features_run

    datagen_run(DatagenConfig(customers=customers, seed=42, end_date="2026-11-22", out_dir=root / "data" / "raw"))
    features_run(FeaturesConfig(raw_dir=root / "data" / "raw", out_dir=root / "data" / "features",
                                start_date="2026-11-01", end_date="2026-11-22"))
    repo = root / "feature_repo"
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "*.db", "__pycache__"))
    feast_apply(repo, data_dir=root / "data" / "features")
    return repo, snapshot_run(SnapshotConfig(repo=repo, label_date="2026-11-15", out=root / "snapshots"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=None, help="applied Feast repo with a privileged view")
    parser.add_argument("--snapshot", type=Path, default=None)
    parser.add_argument("--customers", type=int, default=20_000, help="demo base size when no --repo is given")
    parser.add_argument("--catalog", type=Path, default=None, help="segment_catalog.parquet (segment kinds)")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--selection", action="store_true",
                        help="also score each model under the per-segment scorer selection (issue #9)")
    parser.add_argument("overrides", nargs="*", help="training key=value overrides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("mlflow", "feast", "urllib3", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.repo is None or args.snapshot is None:
        import tempfile

        args.repo, args.snapshot = build_base(args.customers, Path(tempfile.mkdtemp(prefix="bench-distill-")))
    catalog = args.catalog or args.repo.parent / "data" / "raw" / "segment_catalog.parquet"
    kinds = segment_kinds(catalog)
    params = AssignmentParams()
    load_before = os.getloadavg()
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        config = load_config(TrainConfig, ROOT / "configs" / "training.yaml", [
            f"snapshot={args.snapshot}", f"seed={seed}", f"split.seed={seed}", "progress=false",
            *args.overrides])
        results.append(run_seed(config, args.repo, kinds, params,
                                selection_workdir=args.snapshot.parent if args.selection else None))
        print(json.dumps(results[-1], indent=1), flush=True)
    load_after = os.getloadavg()
    names = list(results[0]["rows"])
    metrics = ["non_navigation.micro_f1", "non_navigation.macro_f1", "navigation.micro_f1"]
    if args.selection:
        metrics += ["selected.non_navigation.micro_f1", "selected.non_navigation.macro_f1",
                    "selected.navigation.micro_f1"]
    print(f"\nload average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1-min); seeds {args.seeds}; "
          f"{results[0]['customers']} opt-in customers, overrides {args.overrides}")
    print(f"| method | {' | '.join(metrics)} | val kNN micro-F1 |")
    print("|---|" + "---|" * (len(metrics) + 1))
    for name in names:
        cells = []
        for metric in [*metrics, "val_knn_micro_f1"]:
            values = np.array([r["rows"][name].get(metric, np.nan) for r in results], dtype=float)
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
        print(f"| {name} | {' | '.join(cells)} |")
    if args.out:
        args.out.write_text(json.dumps({"load_before": load_before, "load_after": load_after,
                                        "overrides": args.overrides, "seeds": results}, indent=1))


if __name__ == "__main__":
    main()
