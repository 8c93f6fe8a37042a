"""``lookalike evaluate``: assignment quality against baselines, and volume expansion.

Quality is measured on opt-in customers of the encoder's ``test`` split, assigned as if
they were not opt-in (their k nearest anchors exclude themselves): the selected system
(each segment scored by the scorer the bundle chose for it), every candidate scorer alone
and the baselines, all with thresholds fitted on out-of-sample scores of non-test anchors.
A warning heads the report whenever the selected system is below the best single method.
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
from index_builder.aggregation import decide
from index_builder.bundle import IndexBundle, current_path, load_bundle
from index_builder.catalog import default_catalog, segment_kinds, segment_names
from index_builder.config import EvaluateConfig
from index_builder.metrics import SegmentMetrics, confusion_counts, flag_unrecoverable, segment_metrics
from index_builder.scorers import SCORERS, fold_ids
from index_builder.selection import Selection, beats_prior, cross_validated_decisions
from lookalike.artifacts import atomic_dir, write_manifest
from lookalike.config import cli_overrides, load_config
from lookalike.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

TWO_TOWER = "two_tower"
SELECTED = "selected"
SELECTED_LABEL = "selected (this system)"
# scorer name in the bundle -> method name in the report (the tower kNN is "two_tower")
METHOD_OF_SCORER = {"tower_knn": TWO_TOWER}
# within this much of the best single method counts as matching it (bench/README.md acceptance)
MATCH_TOLERANCE = 0.005


@dataclass
class MethodResult:
    name: str
    metrics: SegmentMetrics
    test_decisions: np.ndarray


def _baseline(name: str, k: int, aggregation: str, clusters: int) -> Any:
    factories = {
        "raw_feature_knn": lambda: bl.RawFeatureKNN(k=k, aggregation=aggregation),
        "kmeans_propagation": lambda: bl.KMeansPropagation(n_clusters=clusters),
    }
    if name not in factories:
        raise ConfigError(f"unknown baseline {name!r}; choose from {sorted(factories) + list(SCORERS)}")
    return factories[name]()


def _baseline_scores(model: Any, features: np.ndarray, labels: sp.csr_matrix, fit: np.ndarray,
                     test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(out-of-sample scores on the fit rows, test scores)``; test labels never shape a threshold."""
    if isinstance(model, bl.RawFeatureKNN):
        # leave-one-out among non-test anchors; test customers search every other anchor
        return (model.scores(features[fit], labels[fit], features[fit], np.arange(len(fit))),
                model.scores(features, labels, features[test], test))
    folds = fold_ids(len(fit), 5, 0)
    oos = np.zeros((len(fit), labels.shape[1]), np.float32)
    for f in np.unique(folds):
        held = folds == f
        oos[held] = model.scores(features[fit[~held]], labels[fit[~held]], features[fit[held]])
    return oos, model.scores(features[fit], labels[fit], features[test])


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
    """The selected system first, then every candidate scorer and baseline alone, on the test split.

    Every method is decided with thresholds fitted on out-of-sample scores of non-test anchors
    (the candidates' thresholds are the ones stored in the bundle's selection).
    """
    segments = bundle.segments
    fit, test = np.flatnonzero(split != "test"), np.flatnonzero(split == "test")
    if len(test) == 0 or len(fit) < 2:
        raise DataValidationError(
            f"evaluation needs test anchors and non-test anchors; found test={len(test)}, others={len(fit)}")
    labels = sp.csr_matrix(labels)
    truth_test = labels[test]
    prevalence = np.asarray(labels[fit].mean(axis=0)).ravel()
    spec = bundle.assignment
    exclude = bundle.anchor_rows(anchor_ids[test])

    def result(name: str, decisions: np.ndarray) -> MethodResult:
        return MethodResult(name, segment_metrics(truth_test, decisions, segments, prevalence), decisions)

    from index_builder.assign import score_in_chunks

    _, selected = score_in_chunks(bundle, embeddings[test], features[test], 4096, exclude, "score test split")
    results = [result(SELECTED, selected)]
    selection = bundle.selection
    scorers = selection.scorers if selection is not None else ["tower_knn"]
    for name in scorers:
        log.info("evaluate scorer %s alone", name)
        scores = bundle.method_scores(name, embeddings[test], features[test], exclude_anchor_rows=exclude)
        decisions = decide(scores, selection.thresholds_of(name) if selection is not None else spec.threshold_array)
        if selection is not None:
            # the same shipping rule as the system: no rows where the method does not beat the prior
            decisions &= selection.shipped_of(name)[None, :]
        results.append(result(METHOD_OF_SCORER.get(name, name), decisions))
    for name in baseline_names:
        if name in SCORERS:
            continue  # already evaluated as a candidate scorer
        model = _baseline(name, spec.k, spec.aggregation, kmeans_clusters)
        log.info("baseline %s", name)
        s_fit, s_test = _baseline_scores(model, features, labels, fit, test)
        truth_fit = labels[fit].toarray().astype(bool)
        thresholds, ships = np.ones(len(segments), np.float32), np.zeros(len(segments), bool)
        for j in range(len(segments)):
            if truth_fit[:, j].sum() >= spec.min_positives:
                thresholds[j], predicted = cross_validated_decisions(s_fit[:, j], truth_fit[:, j], 5, 0,
                                                                     spec.threshold_floor)
                gain, gain_se = beats_prior(predicted, truth_fit[:, j])
                ships[j] = gain > gain_se
        results.append(result(name, decide(s_test, thresholds) & ships[None, :]))
    return results


def method_verdicts(summary: pd.DataFrame) -> tuple[list[str], list[str]]:
    """``(verdicts, warnings)``: the selected system against the best single method."""
    selected = summary[summary["method"] == SELECTED]
    singles = summary[summary["method"] != SELECTED]
    if not len(selected) or not len(singles):
        return [], []
    row = selected.iloc[0]
    verdicts, warnings = [], []
    for metric in ("micro_f1", "macro_f1"):
        best = singles.sort_values(metric, ascending=False).iloc[0]
        label = metric.replace("_f1", "-F1")
        if row[metric] >= best[metric] - MATCH_TOLERANCE:
            verdicts.append(f"selected {label} {row[metric]:.3f} matches or beats the best single method "
                            f"({best['method']}, {best[metric]:.3f}).")
        else:
            warnings.append(f"WARNING: selected {label} {row[metric]:.3f} is BELOW the best single method "
                            f"{best['method']} ({best[metric]:.3f}).")
    return verdicts, warnings


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


def selection_table(selection: Selection | None, names: dict[str, str]) -> pd.DataFrame:
    """Which scorer each segment uses, its out-of-sample F1 and threshold, and why."""
    columns = ["segment", "name", "scorer", "oos_f1", "prior_f1", "f1_threshold", "threshold", "shipped", "why"]
    if selection is None:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame([{
        "segment": c.segment, "name": names.get(c.segment, ""), "scorer": c.scorer or "none",
        "oos_f1": c.oos_f1, "prior_f1": c.prior_f1,
        "f1_threshold": c.threshold if c.f1_threshold is None else c.f1_threshold,
        "threshold": c.threshold, "shipped": c.shipped, "why": c.reason,
    } for c in selection.segments], columns=columns)


def tradeoff_sentence(selection: Selection | None) -> str:
    """How the shipped thresholds trade macro- for micro-F1, in one sentence (empty: they do not)."""
    tradeoff = selection.tradeoff if selection is not None else {}
    table = tradeoff.get("cross_validated", {})
    if not table:
        return ""
    if not tradeoff["weight"] or not tradeoff["segments"]:
        return (f" Thresholds: each segment's own F1 threshold; no trade of at most "
                f"{tradeoff['macro_tolerance']:.3f} cross-validated macro-F1 for micro-F1 moved any of them.")
    chosen, own = table[f"{tradeoff['weight']:.2f}"], table["0.00"]
    return (f" Thresholds: the per-segment F1 thresholds (f1_threshold) flag many customers on weak segments, "
            f"so the shipped thresholds maximise {tradeoff['weight']:.2f} x micro-F1 + "
            f"{1 - tradeoff['weight']:.2f} x macro-F1, the weight with the best cross-validated micro-F1 among "
            f"those losing at most {tradeoff['macro_tolerance']:.3f} cross-validated macro-F1 "
            f"(non-test anchors: micro {own[0]:.3f} -> {chosen[0]:.3f}, macro {own[1]:.3f} -> {chosen[1]:.3f}; "
            f"{tradeoff['segments']} thresholds moved).")


def guard_sentence(selection: Selection | None) -> str:
    """The nested comparison of the per-segment selection with each scorer alone, in one sentence."""
    guard = selection.guard if selection is not None else {}
    if "nested_cv" not in guard:
        return f" Selection guard skipped: {guard['skipped']}." if "skipped" in guard else ""
    table = ", ".join(f"{name} {micro:.3f}/{macro:.3f}" for name, (micro, macro) in guard["nested_cv"].items())
    return (f" Selection guard (nested cross-validation on {guard['anchors']} non-test anchors, micro/macro-F1): "
            f"{table}; shipped: {guard['chosen']} (a single scorer replaces the per-segment selection only if "
            f"better by more than {guard['tolerance']:.3f} on one and not worse by more on the other).")


def method_label(selection: Selection | None) -> str:
    chosen = (selection.guard if selection is not None else {}).get("chosen")
    if chosen and chosen in (selection.scorers if selection is not None else []):
        return f"{chosen} on every segment (it beat the per-segment selection out of sample)"
    return "per-segment scorer selection by out-of-sample F1"


def summary_lines(summary: pd.DataFrame, verdicts: list[str], warnings: list[str], expansion: pd.DataFrame | None,
                  reach: dict[str, int], excluded: pd.DataFrame,
                  method: str = "per-segment scorer selection by out-of-sample F1") -> list[str]:
    """The opening paragraph a marketing reader needs: method, baselines, reach, growth, exclusions."""
    selected = summary[summary["method"] == SELECTED]
    lines = []
    if len(selected):
        row = selected.iloc[0]
        lines.append(f"Method: {method} (this system): micro-F1 "
                     f"{row['micro_f1']:.3f}, macro-F1 {row['macro_f1']:.3f} on the held-out test split.")
    lines += warnings or verdicts
    if reach:
        lines.append(f"Customers reached: {reach.get('customers_with_segments', 0):,} hold at least one segment "
                     f"({reach.get('opt_in', 0):,} opt-in, {reach.get('lookalike', 0):,} through lookalikes).")
    if expansion is not None and len(expansion):
        growth = expansion["increase_pct"].replace([np.inf, -np.inf], np.nan).dropna()
        total_in, total_look = int(expansion["opt_in"].sum()), int(expansion["lookalike"].sum())
        lines.append(f"Volume growth from lookalikes: median +{growth.median():.0f}% per segment; total "
                     f"+{total_look:,} memberships on {total_in:,} opt-in (+{100 * total_look / max(total_in, 1):.0f}%).")
    if len(excluded):
        lines.append(f"Segments excluded from lookalikes ({len(excluded)}): " + "; ".join(
            f"{r.segment}{f' ({r.name})' if r.name else ''}: {r.why}" for r in excluded.itertuples()) + ".")
    else:
        lines.append("No segment excluded: every segment's scorer beats the prevalence prior out of sample.")
    return lines


def write_evaluation(
    out_dir: Path,
    results: list[MethodResult],
    truth_test: sp.csr_matrix,
    expansion: pd.DataFrame | None,
    kinds: dict[str, str],
    margin: float,
    n_confusions: int,
    context: dict[str, Any],
    selection: Selection | None = None,
    names: dict[str, str] | None = None,
    reach: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Plots, report.md/html and metrics.json, atomically into ``out_dir``.

    ``results[0]`` is the system as shipped (the selected scorers); ``names`` maps segment ids
    to catalog display names; ``reach`` counts customers holding segments in the segment table.
    """
    from index_builder import report

    names = names or {}
    main = results[0]
    per_segment = main.metrics.per_segment.copy()
    per_segment["unrecoverable"] = flag_unrecoverable(per_segment, margin)
    per_segment["kind"] = per_segment["segment"].map(kinds).fillna("unknown")
    per_segment.insert(1, "name", per_segment["segment"].map(names).fillna(""))
    summary = pd.DataFrame([{"method": r.name, **r.metrics.summary()} for r in results])
    verdicts, warnings = method_verdicts(summary)
    choices = selection_table(selection, names)
    excluded = choices[~choices["shipped"].astype(bool)]
    unrecoverable = per_segment.loc[per_segment["unrecoverable"], "segment"].tolist()
    navigation = [s for s, k in kinds.items() if k == "navigation"]
    nav_flagged = sorted(set(navigation) & set(unrecoverable))
    recoverable_nav = sorted(set(navigation) - set(unrecoverable))
    opening = summary_lines(summary, verdicts, warnings, expansion, reach or {}, excluded, method_label(selection))
    metrics = {
        "methods": summary.to_dict(orient="records"),
        "verdicts": verdicts,
        "warnings": warnings,
        "summary": opening,
        "selection": choices.to_dict(orient="records"),
        "excluded_scorers": dict(selection.excluded_scorers) if selection is not None else {},
        "threshold_tradeoff": dict(selection.tradeoff) if selection is not None else {},
        "selection_guard": dict(selection.guard) if selection is not None else {},
        "excluded_segments": excluded["segment"].tolist(),
        "unrecoverable_segments": unrecoverable,
        "navigation_segments": sorted(navigation),
        "navigation_flagged_unrecoverable": nav_flagged,
        "navigation_not_flagged": recoverable_nav,
        "per_segment": per_segment.to_dict(orient="records"),
        "reach": reach or {},
        **context,
    }
    display = summary.copy()
    display["method"] = display["method"].replace({SELECTED: SELECTED_LABEL})
    with atomic_dir(out_dir) as tmp:
        images: dict[str, list[str]] = {"expansion": [], "quality": [], "methods": []}
        if expansion is not None and len(expansion):
            expansion = expansion.copy()
            expansion.insert(1, "name", expansion["segment"].map(names).fillna(""))
            report.plot_expansion(expansion, tmp / "volume_expansion.png")
            report.plot_distribution(expansion, tmp / "segment_distribution.png")
            images["expansion"] = ["volume_expansion.png", "segment_distribution.png"]
            metrics["expansion"] = expansion.to_dict(orient="records")
        report.plot_f1(per_segment, tmp / "f1_by_segment.png", "Per-segment F1, selected scorers (test split)")
        largest = per_segment.sort_values("support", ascending=False).head(n_confusions)
        dense_truth = truth_test.toarray().astype(bool)
        position = {s: j for j, s in enumerate(per_segment["segment"])}
        confusions = {s: confusion_counts(dense_truth[:, position[s]], main.test_decisions[:, position[s]])
                      for s in largest["segment"]}
        report.plot_confusions(confusions, tmp / "confusion_matrices.png")
        report.plot_methods(display, tmp / "methods.png")
        images["quality"] = ["f1_by_segment.png", "confusion_matrices.png"]
        images["methods"] = ["methods.png"]
        by_method = pd.DataFrame({"segment": per_segment["segment"], "name": per_segment["name"]})
        for r in results:
            by_method[SELECTED_LABEL if r.name == SELECTED else r.name] = r.metrics.per_segment["f1"].to_numpy()
        sections = [
            ("Summary", " ".join(opening), [], []),
            ("Methods on the test split",
             "Opt-in TEST customers assigned as if non-opt-in (self excluded from their neighbours). Every "
             "method's thresholds were fitted on out-of-sample scores of non-test anchors only (each method's own "
             "per-segment F1 thresholds, moved by the same micro/macro-F1 trade-off as the system's where the "
             "method was scored on every non-test anchor), and every method follows the same shipping rule: no "
             "lookalikes for a segment where it does not beat the prevalence prior out of sample. The selected "
             f"system: {method_label(selection)}. " + " ".join(warnings + verdicts),
             [display], images["methods"]),
            ("Scorer per segment",
             "Chosen from out-of-sample F1 on non-test opt-in anchors (cross-validated thresholds); ties go to "
             "the simpler scorer. Segments that do not beat the prevalence prior get no lookalike rows."
             + tradeoff_sentence(selection) + guard_sentence(selection)
             + "".join(f" Scorer {name} {why}." for name, why in
                       (selection.excluded_scorers.items() if selection is not None else [])),
             [choices], []),
            ("Volume expansion",
             "Customers per segment: opt-in (explicit) and lookalike (inferred for non-opt-in customers); "
             "the percentage is the growth due to lookalike inference.",
             [expansion[["segment", "name", "opt_in", "lookalike", "increase_pct"]]] if expansion is not None
             else [], images["expansion"]),
            ("Per-segment quality",
             f"Selected system. Segments whose F1 is within {margin:.2f} of the prior F1 (predicting the segment "
             "for everybody) are flagged unrecoverable from legitimate-interest data"
             + (f"; navigation segments flagged: {len(nav_flagged)}/{len(navigation)}" if navigation else "")
             + ".",
             [per_segment[["segment", "name", "kind", "support", "precision", "recall", "f1", "prior_f1",
                           "unrecoverable"]].sort_values("f1", ascending=False)],
             images["quality"]),
            ("Per-segment F1 by method", "Same test customers, F1 per segment for every method.",
             [by_method], []),
        ]
        report.write_report(tmp, sections, f"Lookalike evaluation {context.get('run_date', '')}",
                            warnings=warnings)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
        write_manifest(tmp, "evaluation_report", **{k: v for k, v in context.items() if k != "counts"},
                       methods=summary.to_dict(orient="records"), verdicts=verdicts, warnings=warnings)
    return metrics


def reach_counts(segment_table: pd.DataFrame) -> dict[str, int]:
    by_source = segment_table.groupby("source")["customer_id"].nunique()
    return {"customers_with_segments": int(segment_table["customer_id"].nunique()),
            "opt_in": int(by_source.get("opt_in", 0)), "lookalike": int(by_source.get("lookalike", 0))}


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)


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
    from index_builder.build import anchors_features

    features = anchors_features(encoder, anchors)
    results = compare_methods(bundle, anchors.ids, anchors.labels, anchors.split, anchors.embeddings, features,
                              list(config.baselines), config.kmeans_clusters)
    table_dir = segment_table_dir or Path(config.segments_root) / run_date
    expansion, reach = None, None
    if (table_dir / "segments.parquet").exists():  # a file (local engine) or Spark's part files
        table = pq.read_table(table_dir / "segments.parquet", columns=["customer_id", "segment", "source"]).to_pandas()
        expansion = expansion_table(table, bundle.segments)
        reach = reach_counts(table)
    else:
        log.warning("no segment table at %s; the report has no volume expansion section", table_dir)
    catalog = catalog or config.segment_catalog or default_catalog(Path(config.repo), store)
    kinds = segment_kinds(catalog)
    names = bundle.assignment.segment_names or segment_names(catalog)
    test = anchors.split == "test"
    out_dir = output_dir or Path(config.output_root) / run_date
    context = {"run_date": run_date, "model_version": bundle.model_version, "index_version": bundle.index_version,
               "test_customers": int(test.sum()), "k": bundle.assignment.k,
               "aggregation": bundle.assignment.aggregation}
    metrics = write_evaluation(out_dir, results, anchors.labels[np.flatnonzero(test)], expansion, kinds,
                               config.unrecoverable_margin, config.confusion_segments, context,
                               bundle.selection, names, reach)
    for verdict in metrics["verdicts"]:
        log.info("evaluation: %s", verdict)
    for warning in metrics["warnings"]:
        log.warning("evaluation: %s", warning)
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
