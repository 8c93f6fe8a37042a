"""``lookalike evaluate``: assignment quality against baselines, and volume expansion.

Quality is measured on opt-in customers of the encoder's ``test`` split, assigned as if
they were not opt-in (their k nearest anchors exclude themselves), with the thresholds
the bundle calibrated on the ``validation`` split. Baselines are scored on the same
customers and get thresholds calibrated the same way on the same validation customers.
The report (Markdown + HTML + PNGs + metrics.json) is written atomically and logged to
MLflow.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

from index_builder import baselines as bl
from index_builder.aggregation import calibrate_thresholds, decide
from index_builder.bundle import IndexBundle, current_path, load_bundle
from index_builder.config import EvaluateConfig
from index_builder.metrics import SegmentMetrics, confusion_counts, flag_unrecoverable, segment_metrics
from lookalike.artifacts import atomic_dir, write_manifest
from lookalike.config import cli_overrides, load_config
from lookalike.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

TWO_TOWER = "two_tower"


@dataclass
class MethodResult:
    name: str
    metrics: SegmentMetrics
    test_decisions: np.ndarray


def _baseline(name: str, k: int, aggregation: str, clusters: int) -> Any:
    factories = {
        "raw_feature_knn": lambda: bl.RawFeatureKNN(k=k, aggregation=aggregation),
        "iv_weighted_knn": lambda: bl.IVWeightedKNN(k=k),
        "kmeans_propagation": lambda: bl.KMeansPropagation(n_clusters=clusters),
        "logistic_regression": lambda: bl.PerSegmentLogistic(),
    }
    if name not in factories:
        raise ConfigError(f"unknown baseline {name!r}; choose from {sorted(factories)}")
    return factories[name]()


def compare_methods(
    bundle: IndexBundle,
    anchor_ids: np.ndarray,
    labels: sp.csr_matrix,
    split: np.ndarray,
    embeddings: np.ndarray,
    features: np.ndarray,
    baseline_names: list[str],
    kmeans_clusters: int = 32,
) -> list[MethodResult]:
    """Two-tower pipeline and baselines on the test split (thresholds from validation)."""
    segments = bundle.segments
    val, test, train = (np.flatnonzero(split == s) for s in ("validation", "test", "train"))
    if len(test) == 0 or len(val) == 0 or len(train) == 0:
        raise DataValidationError(
            f"evaluation needs anchors in every split; found train={len(train)}, validation={len(val)}, "
            f"test={len(test)}"
        )
    labels = sp.csr_matrix(labels)
    truth_test = labels[test]
    prevalence = np.asarray(labels[train].mean(axis=0)).ravel()
    spec = bundle.assignment
    results = []
    test_scores = bundle.score(embeddings[test], exclude_anchor_rows=bundle.anchor_rows(anchor_ids[test]))
    decisions = bundle.decide(test_scores)
    results.append(MethodResult(TWO_TOWER, segment_metrics(truth_test, decisions, segments, prevalence), decisions))
    for name in baseline_names:
        model = _baseline(name, spec.k, spec.aggregation, kmeans_clusters)
        log.info("baseline %s", name)
        if isinstance(model, (bl.RawFeatureKNN, bl.IVWeightedKNN)):
            s_val = model.scores(features, labels, features[val], val)
            s_test = model.scores(features, labels, features[test], test)
        else:
            s_val = model.scores(features[train], labels[train], features[val])
            s_test = model.scores(features[train], labels[train], features[test])
        cal = calibrate_thresholds(s_val, labels[val], spec.threshold_mode, spec.fixed_threshold,
                                   spec.threshold_floor, spec.min_positives)
        decisions = decide(s_test, cal.thresholds)
        results.append(MethodResult(name, segment_metrics(truth_test, decisions, segments, prevalence), decisions))
    return results


def expansion_table(segment_table: pd.DataFrame, segments: list[str]) -> pd.DataFrame:
    """Per segment: opt-in volume, lookalike volume, % increase, and shares of each group."""
    counts = segment_table.groupby(["segment", "source"]).size().unstack(fill_value=0)
    counts = counts.reindex(index=sorted(set(segments) | set(counts.index)), fill_value=0)
    for column in ("opt_in", "lookalike"):
        if column not in counts.columns:
            counts[column] = 0
    frame = counts[["opt_in", "lookalike"]].reset_index().rename(columns={"index": "segment"})
    frame.columns = ["segment", "opt_in", "lookalike"]
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["increase_pct"] = np.where(frame["opt_in"] > 0, 100.0 * frame["lookalike"] / frame["opt_in"], np.nan)
    customers = segment_table.groupby("source")["customer_id"].nunique()
    frame["opt_in_share"] = frame["opt_in"] / max(int(customers.get("opt_in", 0)), 1)
    frame["lookalike_share"] = frame["lookalike"] / max(int(customers.get("lookalike", 0)), 1)
    return frame


def segment_kinds(catalog: Path | None) -> dict[str, str]:
    if catalog is None or not Path(catalog).is_file():
        return {}
    table = pq.read_table(catalog).to_pandas()
    if not {"segment_id", "kind"} <= set(table.columns):
        return {}
    return dict(zip(table["segment_id"].astype(str), table["kind"].astype(str), strict=True))


def write_evaluation(
    out_dir: Path,
    results: list[MethodResult],
    truth_test: sp.csr_matrix,
    expansion: pd.DataFrame | None,
    kinds: dict[str, str],
    margin: float,
    n_confusions: int,
    context: dict[str, Any],
) -> dict[str, Any]:
    """Plots, report.md/html and metrics.json, atomically into ``out_dir``."""
    from index_builder import report

    main = results[0]
    per_segment = main.metrics.per_segment.copy()
    per_segment["unrecoverable"] = flag_unrecoverable(per_segment, margin)
    per_segment["kind"] = per_segment["segment"].map(kinds).fillna("unknown")
    summary = pd.DataFrame([{"method": r.name, **r.metrics.summary()} for r in results])
    best_baseline = summary.iloc[1:].sort_values("micro_f1", ascending=False).head(1)
    verdicts = []
    main_micro = summary.iloc[0]["micro_f1"]
    raw = summary[summary["method"] == "raw_feature_knn"]
    if len(raw):
        beats = main_micro > raw.iloc[0]["micro_f1"]
        verdicts.append(f"two-tower micro F1 {main_micro:.3f} vs raw-feature kNN {raw.iloc[0]['micro_f1']:.3f}: "
                        + ("beats it." if beats else "DOES NOT beat it."))
    if len(best_baseline):
        b = best_baseline.iloc[0]
        matches = main_micro >= b["micro_f1"] - 0.01
        verdicts.append(f"best baseline {b['method']} micro F1 {b['micro_f1']:.3f}: two-tower "
                        + ("matches or beats it." if matches else "is BELOW it."))
    unrecoverable = per_segment.loc[per_segment["unrecoverable"], "segment"].tolist()
    navigation = [s for s, k in kinds.items() if k == "navigation"]
    nav_flagged = sorted(set(navigation) & set(unrecoverable))
    recoverable_nav = sorted(set(navigation) - set(unrecoverable))
    metrics = {
        "methods": summary.to_dict(orient="records"),
        "verdicts": verdicts,
        "unrecoverable_segments": unrecoverable,
        "navigation_segments": sorted(navigation),
        "navigation_flagged_unrecoverable": nav_flagged,
        "navigation_not_flagged": recoverable_nav,
        "per_segment": per_segment.to_dict(orient="records"),
        **context,
    }
    with atomic_dir(out_dir) as tmp:
        images: dict[str, list[str]] = {"expansion": [], "quality": [], "methods": []}
        if expansion is not None and len(expansion):
            report.plot_expansion(expansion, tmp / "volume_expansion.png")
            report.plot_distribution(expansion, tmp / "segment_distribution.png")
            images["expansion"] = ["volume_expansion.png", "segment_distribution.png"]
            metrics["expansion"] = expansion.to_dict(orient="records")
        report.plot_f1(per_segment, tmp / "f1_by_segment.png", "Per-segment F1, two-tower lookalike (test split)")
        largest = per_segment.sort_values("support", ascending=False).head(n_confusions)
        dense_truth = truth_test.toarray().astype(bool)
        position = {s: j for j, s in enumerate(per_segment["segment"])}
        confusions = {s: confusion_counts(dense_truth[:, position[s]], main.test_decisions[:, position[s]])
                      for s in largest["segment"]}
        report.plot_confusions(confusions, tmp / "confusion_matrices.png")
        report.plot_methods(summary, tmp / "methods.png")
        images["quality"] = ["f1_by_segment.png", "confusion_matrices.png"]
        images["methods"] = ["methods.png"]
        baseline_table = pd.DataFrame({"segment": per_segment["segment"], "two_tower": per_segment["f1"]})
        for r in results[1:]:
            baseline_table[r.name] = r.metrics.per_segment["f1"].to_numpy()
        sections = [
            ("Volume expansion",
             "Customers per segment: opt-in (explicit) and lookalike (inferred for non-opt-in customers); "
             "the percentage is the growth due to lookalike inference.",
             [expansion[["segment", "opt_in", "lookalike", "increase_pct"]]] if expansion is not None else [],
             images["expansion"]),
            ("Two-tower pipeline vs baselines",
             "Opt-in TEST customers assigned as if non-opt-in (self excluded from their neighbours); "
             "every method's thresholds calibrated on the validation split. " + " ".join(verdicts),
             [summary], images["methods"]),
            ("Per-segment quality",
             f"Segments whose F1 is within {margin:.2f} of the prior F1 (predicting the segment for everybody) "
             "are flagged unrecoverable from legitimate-interest data"
             + (f"; navigation segments flagged: {len(nav_flagged)}/{len(navigation)}" if navigation else "")
             + ".",
             [per_segment[["segment", "kind", "support", "precision", "recall", "f1", "prior_f1",
                           "unrecoverable"]].sort_values("f1", ascending=False)],
             images["quality"]),
            ("Per-segment F1 by method", "Same test customers, F1 per segment for every method.",
             [baseline_table], []),
        ]
        report.write_report(tmp, sections, f"Lookalike evaluation {context.get('run_date', '')}")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
        write_manifest(tmp, "evaluation_report", **{k: v for k, v in context.items() if k != "counts"},
                       methods=summary.to_dict(orient="records"), verdicts=verdicts)
    return metrics


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)


def default_catalog(repo: Path, store: Any) -> Path | None:
    from lookalike.contract import find_view_by_role

    view = find_view_by_role(store, "labels")
    path = getattr(view.batch_source, "path", None) if view is not None else None
    if path:
        guess = Path(path).parent.parent / "raw" / "segment_catalog.parquet"
        if guess.is_file():
            return guess
    guess = Path(repo) / "data" / "segment_catalog.parquet"
    return guess if guess.is_file() else None


def run(config: EvaluateConfig, *, population: Any = None, encoder_and_info: Any = None,
        bundle: IndexBundle | None = None, anchors: Any = None, segment_table_dir: Path | None = None,
        output_dir: Path | None = None, catalog: Path | None = None) -> Path:
    from index_builder.build import collect_anchors
    from index_builder.population import load_population, parse_date
    from lookalike.feast_utils import open_store
    from training.artifact import load_registered_encoder

    as_of = parse_date(config.date)
    run_date = as_of.date().isoformat()
    bundle = bundle or load_bundle(config.bundle or current_path(config.index_root, "index bundle"))
    store = open_store(config.repo)
    encoder, info = encoder_and_info or load_registered_encoder(
        config.model.tracking_uri, bundle.manifest.get("model_name", config.model.name), bundle.model_version)
    population = population or load_population(store, as_of, encoder.contract.service_name)
    anchors = anchors or collect_anchors(store, population, encoder, 16384)
    features = encoder.feature_matrix(anchors.frame)
    results = compare_methods(bundle, anchors.ids, anchors.labels, anchors.split, anchors.embeddings, features,
                              list(config.baselines), config.kmeans_clusters)
    table_dir = segment_table_dir or Path(config.segments_root) / run_date
    expansion = None
    if (table_dir / "segments.parquet").exists():  # a file (local engine) or Spark's part files
        expansion = expansion_table(pq.read_table(table_dir / "segments.parquet").to_pandas(), bundle.segments)
    else:
        log.warning("no segment table at %s; the report has no volume expansion section", table_dir)
    kinds = segment_kinds(catalog or config.segment_catalog or default_catalog(Path(config.repo), store))
    test = anchors.split == "test"
    out_dir = output_dir or Path(config.output_root) / run_date
    context = {"run_date": run_date, "model_version": bundle.model_version, "index_version": bundle.index_version,
               "test_customers": int(test.sum()), "k": bundle.assignment.k,
               "aggregation": bundle.assignment.aggregation}
    metrics = write_evaluation(out_dir, results, anchors.labels[np.flatnonzero(test)], expansion, kinds,
                               config.unrecoverable_margin, config.confusion_segments, context)
    for verdict in metrics["verdicts"]:
        log.info("evaluation: %s", verdict)
    if config.log_mlflow:
        from index_builder.tracking import log_run

        flat = {}
        for row in metrics["methods"]:
            flat.update({f"{row['method']}.{k}": v for k, v in row.items() if k != "method"})
        log_run(config.model.tracking_uri, config.experiment, f"evaluate-{run_date}",
                tags={"stage": "evaluate", "model_version": bundle.model_version,
                      "index_version": bundle.index_version, "run_date": run_date},
                params={"baselines": ",".join(config.baselines), "k": bundle.assignment.k},
                metrics=flat, artifact_dirs={"report": out_dir})
    return out_dir


def add_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--date")
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")

    def handler(args: argparse.Namespace) -> int:
        overrides = cli_overrides(args, ["repo", "date", "bundle"])
        print(run(load_config(EvaluateConfig, args.config, overrides)))
        return 0

    parser.set_defaults(func=handler)
