"""Drift between weekly runs: inputs, embeddings and segment volumes, with a PASS/WARN/FAIL verdict.

Every weekly run leaves a small *drift profile* (``<workspace>/drift/<run_date>/profile.json``):
per model input a histogram (numeric: counts on the run's own decile edges; categorical and
boolean: counts of the most frequent values, rare values pooled) and its null count; the
embedding mean, total variance and the histogram of each customer's cosine to its nearest
anchor; and the per-segment opt-in / lookalike volumes. No customer-level row is kept, and
values held by fewer than ``min_category_count`` customers are pooled into ``__other__``.

The next run compares its own sample against the live profile (the last run that was
published): per feature the population stability index (PSI) and the Jensen-Shannon
distance (scipy) on the reference's bins, and the change in the share of nulls; the
embedding mean shift and the PSI of the nearest-anchor similarity distribution (only when
the model version is unchanged: two models' spaces are not comparable); and the change
of every segment's volumes. Each check is marked WARN or FAIL by configurable thresholds,
and only when it also exceeds what sampling noise explains at ``significance`` (a
chi-square / two-proportion bound), so a small customer base does not raise false alarms.

A FAIL blocks publication like any other failed step (``weekly.py`` keeps last week's
outputs live) unless ``drift.accept_fail=true`` (``lookalike weekly --accept-drift``); the
override is recorded in the drift manifest and the segment table's manifest.

Why not Evidently: ``pip install --dry-run evidently`` into the pinned environment adds 29
packages (a web framework, nltk, statsmodels, plotly, a telemetry client) and its drift
presets compare two raw data frames, so the previous week's customer-level features would
have to be kept. The statistics needed here are a few lines of numpy/scipy over stored
histograms.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import Field
from scipy import stats
from scipy.spatial.distance import jensenshannon

from lookalike.artifacts import read_json, sha256_tree, utc_now, write_json, write_manifest
from lookalike.config import NonNegativeFloat, NonNegativeInt, PositiveInt, stage_config
from lookalike.errors import LookalikeError

log = logging.getLogger(__name__)

PASS, WARN, FAIL, NO_REFERENCE = "PASS", "WARN", "FAIL", "NO_REFERENCE"
SKIPPED = "SKIPPED"
OTHER = "__other__"
PROFILE_FILE, REPORT_JSON, REPORT_MD, PLOT_FILE = "profile.json", "drift.json", "drift.md", "drift_psi.png"
DRIFT_KIND = "drift_report"
_SEVERITY = {PASS: 0, SKIPPED: 0, NO_REFERENCE: 0, WARN: 1, FAIL: 2}
_EPS = 1e-4  # floor on bin shares so an empty bin does not make PSI infinite


class DriftBlocked(LookalikeError):
    """The weekly run's drift verdict is FAIL and no override was given."""


@stage_config
class DriftThresholds:
    # PSI rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift
    feature_psi_warn: NonNegativeFloat = 0.1
    feature_psi_fail: NonNegativeFloat = 0.25
    # absolute increase in a feature's share of nulls
    null_share_warn: NonNegativeFloat = 0.05
    null_share_fail: NonNegativeFloat = 0.2
    # PSI of the nearest-anchor cosine distribution (customers drifting away from the anchors)
    nearest_anchor_psi_warn: NonNegativeFloat = 0.1
    nearest_anchor_psi_fail: NonNegativeFloat = 0.25
    # L2 distance between the mean embeddings (embeddings are unit vectors)
    mean_shift_warn: NonNegativeFloat = 0.1
    mean_shift_fail: NonNegativeFloat = 0.25
    # factor by which a segment's opt-in or lookalike volume grew or shrank. Volumes also move
    # with new labels and recalibrated thresholds (on a 2,000-customer base a clean week moved
    # one segment's lookalike volume 51 -> 4), so by default they warn and never block.
    volume_ratio_warn: Annotated[float, Field(ge=1)] = 1.5
    volume_ratio_fail: Annotated[float, Field(ge=1)] | None = None
    # segments below this volume in both runs are reported, never flagged
    min_volume: NonNegativeInt = 30


@stage_config
class DriftConfig:
    enabled: bool = True
    # customers eligible for lookalike segments sampled for feature and embedding profiles
    sample_size: PositiveInt = 10_000
    seed: int = 0
    bins: Annotated[int, Field(ge=2)] = 10
    top_categories: PositiveInt = 30
    min_category_count: NonNegativeInt = 10
    # a flag also needs the change to exceed sampling noise at this significance level
    significance: Annotated[float, Field(gt=0, lt=1)] = 0.001
    # publish even when the verdict is FAIL (recorded in the manifests)
    accept_fail: bool = False
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)


# ---------------------------------------------------------------- profiles (histograms)

def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def feature_profile(values: pd.Series, bins: int = 10, top: int = 30, min_count: int = 10) -> dict[str, Any]:
    """Histogram summary of one column; numeric on its own quantile edges, else top values."""
    nulls = int(values.isna().sum())
    present = values.dropna()
    if _is_numeric(values):
        numbers = present.to_numpy(dtype=np.float64)
        quantiles = np.quantile(numbers, np.linspace(0, 1, bins + 1)[1:-1]) if len(numbers) else np.array([])
        edges = np.unique(quantiles)
        counts = np.bincount(np.searchsorted(edges, numbers, side="right"), minlength=len(edges) + 1)
        return {"kind": "numeric", "rows": int(len(values)), "nulls": nulls, "edges": edges.tolist(),
                "counts": counts.tolist(), "mean": float(numbers.mean()) if len(numbers) else None}
    frequencies = present.astype(str).value_counts()
    kept = frequencies[frequencies >= min_count].head(top)
    top_counts = {str(k): int(v) for k, v in kept.items()}
    top_counts[OTHER] = int(frequencies.sum() - kept.sum())
    return {"kind": "categorical", "rows": int(len(values)), "nulls": nulls, "counts": top_counts}


def counts_on_reference_bins(reference: dict[str, Any], values: pd.Series) -> np.ndarray:
    """Counts of ``values`` (nulls left out) on the bins of a stored reference profile."""
    present = values.dropna()
    if reference["kind"] == "numeric":
        edges = np.asarray(reference["edges"], dtype=np.float64)
        numbers = pd.to_numeric(present, errors="coerce").dropna().to_numpy(dtype=np.float64)
        return np.bincount(np.searchsorted(edges, numbers, side="right"), minlength=len(edges) + 1)
    categories = [c for c in reference["counts"] if c != OTHER]
    frequencies = present.astype(str).value_counts()
    known = [int(frequencies.get(c, 0)) for c in categories]
    return np.asarray([*known, int(frequencies.sum()) - sum(known)])


def reference_counts(reference: dict[str, Any]) -> np.ndarray:
    counts = reference["counts"]
    if reference["kind"] == "numeric":
        return np.asarray(counts, dtype=np.int64)
    return np.asarray([counts[c] for c in counts if c != OTHER] + [counts.get(OTHER, 0)], dtype=np.int64)


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index, sum (q - p) ln(q / p) over bins, shares floored at 1e-4."""
    p = np.maximum(reference / max(reference.sum(), 1), _EPS)
    q = np.maximum(current / max(current.sum(), 1), _EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def noise_psi(reference: np.ndarray, current: np.ndarray, significance: float) -> float:
    """PSI that sampling noise alone exceeds with probability ``significance``.

    For two samples from one distribution, PSI ~ chi2(bins - 1) x (1/n_ref + 1/n_cur).
    """
    bins = int(((reference + current) > 0).sum())
    n_ref, n_cur = int(reference.sum()), int(current.sum())
    if bins < 2 or n_ref == 0 or n_cur == 0:
        return math.inf
    return float(stats.chi2.ppf(1 - significance, bins - 1) * (1 / n_ref + 1 / n_cur))


def _status(value: float, warn: float, fail: float, significant: bool) -> str:
    if not significant or not np.isfinite(value):
        return PASS
    return FAIL if value >= fail else WARN if value >= warn else PASS


def _worst(statuses: Any) -> str:
    return max(statuses, key=lambda s: _SEVERITY[s], default=PASS)


# ---------------------------------------------------------------- comparisons

def compare_feature(name: str, reference: dict[str, Any], values: pd.Series, config: DriftConfig) -> dict[str, Any]:
    t = config.thresholds
    ref_counts, cur_counts = reference_counts(reference), counts_on_reference_bins(reference, values)
    value = psi(ref_counts, cur_counts)
    floor = noise_psi(ref_counts, cur_counts, config.significance)
    distance = float(jensenshannon(ref_counts + 1e-12, cur_counts + 1e-12, base=2)) \
        if ref_counts.sum() and cur_counts.sum() else math.nan
    null_ref = reference["nulls"] / max(reference["rows"], 1)
    null_cur = float(values.isna().mean()) if len(values) else 0.0
    pooled = (reference["nulls"] + values.isna().sum()) / max(reference["rows"] + len(values), 1)
    spread = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / max(reference["rows"], 1) + 1 / max(len(values), 1)))
    null_significant = abs(null_cur - null_ref) > stats.norm.ppf(1 - config.significance / 2) * spread
    psi_status = _status(value, t.feature_psi_warn, t.feature_psi_fail, value > floor)
    null_status = _status(null_cur - null_ref, t.null_share_warn, t.null_share_fail, null_significant)
    return {"feature": name, "kind": reference["kind"], "psi": round(value, 5),
            "psi_noise_floor": round(floor, 5) if np.isfinite(floor) else None,
            "js_distance": round(distance, 5) if np.isfinite(distance) else None,
            "null_share_ref": round(null_ref, 5), "null_share": round(null_cur, 5),
            "status": _worst([psi_status, null_status])}


def compare_embeddings(reference: dict[str, Any], current: dict[str, Any], config: DriftConfig) -> list[dict[str, Any]]:
    """Mean shift and nearest-anchor similarity PSI; SKIPPED when the model changed."""
    t = config.thresholds
    if reference.get("model_version") != current.get("model_version"):
        note = f"model changed (v{reference.get('model_version')} -> v{current.get('model_version')}): " \
               "embedding spaces are not comparable"
        return [{"check": "embedding", "status": SKIPPED, "note": note}]
    ref_emb, cur_emb = reference["embedding"], current["embedding"]
    n_ref, n_cur = ref_emb["rows"], cur_emb["rows"]
    shift = float(np.linalg.norm(np.asarray(cur_emb["mean"]) - np.asarray(ref_emb["mean"])))
    dim = max(len(ref_emb["mean"]), 1)
    variance = (ref_emb["total_variance"] + cur_emb["total_variance"]) / 2
    shift_floor = math.sqrt(stats.chi2.ppf(1 - config.significance, dim) * variance / dim
                            * (1 / max(n_ref, 1) + 1 / max(n_cur, 1)))
    rows = [{"check": "embedding mean shift", "value": round(shift, 5), "noise_floor": round(shift_floor, 5),
             "status": _status(shift, t.mean_shift_warn, t.mean_shift_fail, shift > shift_floor)}]
    ref_hist = reference_counts(ref_emb["nearest_anchor"])
    cur_hist = np.asarray(cur_emb["nearest_anchor_on_reference_bins"], dtype=np.int64)
    value, floor = psi(ref_hist, cur_hist), noise_psi(ref_hist, cur_hist, config.significance)
    rows.append({"check": "nearest-anchor cosine PSI", "value": round(value, 5),
                 "noise_floor": round(floor, 5) if np.isfinite(floor) else None,
                 "median_ref": ref_emb.get("nearest_anchor_median"), "median": cur_emb.get("nearest_anchor_median"),
                 "status": _status(value, t.nearest_anchor_psi_warn, t.nearest_anchor_psi_fail, value > floor)})
    return rows


def compare_volumes(reference: dict[str, dict[str, int]], current: dict[str, dict[str, int]],
                    thresholds: DriftThresholds) -> list[dict[str, Any]]:
    rows = []
    for segment in sorted(set(reference) | set(current)):
        row: dict[str, Any] = {"segment": segment}
        statuses = []
        for source in ("opt_in", "lookalike"):
            before = int(reference.get(segment, {}).get(source, 0))
            after = int(current.get(segment, {}).get(source, 0))
            ratio = (max(before, after) + 1) / (min(before, after) + 1)
            row |= {f"{source}_ref": before, source: after,
                    f"{source}_change_pct": round(100.0 * (after - before) / before, 1) if before else None}
            if max(before, after) >= thresholds.min_volume:
                fail = thresholds.volume_ratio_fail or math.inf
                statuses.append(_status(ratio, thresholds.volume_ratio_warn, fail, True))
        row["status"] = _worst(statuses)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- the report

@dataclass
class DriftReport:
    run_date: str
    compared_with: str | None
    verdict: str
    features: list[dict[str, Any]] = field(default_factory=list)
    embedding: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    accepted_override: bool = False
    sample_customers: int = 0
    created_at: str = field(default_factory=utc_now)

    @property
    def flagged(self) -> dict[str, list[str]]:
        return {
            "features": [f"{r['feature']} ({r['status']})" for r in self.features if r["status"] in (WARN, FAIL)],
            "embedding": [f"{r['check']} ({r['status']})" for r in self.embedding if r["status"] in (WARN, FAIL)],
            "volumes": [f"{r['segment']} ({r['status']})" for r in self.volumes if r["status"] in (WARN, FAIL)],
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flagged": self.flagged}

    def summary(self) -> str:
        flagged = {k: v for k, v in self.flagged.items() if v}
        if self.verdict == NO_REFERENCE:
            return "no earlier published run to compare with: this run becomes the reference"
        text = "; ".join(f"{k}: {', '.join(v[:6])}" + (f" (+{len(v) - 6})" if len(v) > 6 else "")
                         for k, v in flagged.items())
        return f"{self.verdict} against {self.compared_with}" + (f" -- {text}" if text else "")


def build_report(reference: dict[str, Any] | None, current: dict[str, Any], frame: pd.DataFrame,
                 config: DriftConfig) -> DriftReport:
    """Compare the current run (its profile + sampled feature frame) with the reference profile."""
    report = DriftReport(run_date=current["run_date"], compared_with=None, verdict=NO_REFERENCE,
                         sample_customers=int(current["sample_customers"]))
    if reference is None:
        return report
    report.compared_with = reference["run_date"]
    for name, ref in reference["features"].items():
        if name in frame.columns:
            report.features.append(compare_feature(name, ref, frame[name], config))
        else:
            report.notes.append(f"feature {name} is no longer a model input")
    added = sorted(set(current["features"]) - set(reference["features"]))
    if added:
        report.notes.append(f"new model inputs without a reference: {added}")
    report.features.sort(key=lambda r: (-_SEVERITY[r["status"]], -r["psi"]))
    if "embedding" in reference and "embedding" in current:
        report.embedding = compare_embeddings(reference, current, config)
    report.volumes = compare_volumes(reference.get("volumes", {}), current.get("volumes", {}), config.thresholds)
    report.volumes.sort(key=lambda r: -_SEVERITY[r["status"]])
    report.verdict = _worst(r["status"] for r in report.features + report.embedding + report.volumes)
    if report.verdict in (SKIPPED, NO_REFERENCE):
        report.verdict = PASS
    return report


def to_markdown(report: DriftReport, heading: str = "#") -> str:
    from index_builder.report import _table_md

    lines = [f"{heading} Drift against the previous run", "",
             f"Run {report.run_date}, {report.sample_customers} sampled customers. "
             f"**Drift verdict: {report.verdict}**" + (" (FAIL accepted by override)" if report.accepted_override
                                                        else ""), "", report.summary(), ""]
    lines += [f"- {note}" for note in report.notes] + ([""] if report.notes else [])
    sub = heading + "#"
    if report.features:
        frame = pd.DataFrame(report.features).head(25)
        lines += [f"{sub} Model inputs (25 largest PSI, flagged first)", "", _table_md(frame.fillna("-")), ""]
    if report.embedding:
        lines += [f"{sub} Embeddings", "", _table_md(pd.DataFrame(report.embedding).fillna("-")), ""]
    if report.volumes:
        frame = pd.DataFrame(report.volumes)
        flagged = frame[frame["status"].isin([WARN, FAIL])]
        lines += [f"{sub} Segment volumes ({len(flagged)} of {len(frame)} segments flagged)", "",
                  _table_md((flagged if len(flagged) else frame.head(10)).fillna("-")), ""]
    return "\n".join(lines) + "\n"


def plot_psi(report: DriftReport, path: Path, thresholds: DriftThresholds) -> Path | None:
    if not report.features:
        return None
    from index_builder.report import _plt

    plt = _plt()
    frame = pd.DataFrame(report.features).sort_values("psi", ascending=False).head(30)
    fig, ax = plt.subplots(figsize=(9, max(3, 0.25 * len(frame))))
    colours = [{"FAIL": "#d62728", "WARN": "#ff7f0e"}.get(s, "#1f77b4") for s in frame["status"]]
    ax.barh(frame["feature"][::-1], frame["psi"][::-1], color=colours[::-1])
    for value, style in ((thresholds.feature_psi_warn, "--"), (thresholds.feature_psi_fail, "-")):
        ax.axvline(value, color="grey", linestyle=style, linewidth=1)
    ax.set_xlabel("PSI against the previous run")
    ax.set_title(f"Input drift {report.run_date} vs {report.compared_with}")
    ax.tick_params(axis="y", labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- the weekly hook

def sample_rows(candidates: np.ndarray, size: int, seed: int) -> np.ndarray:
    if len(candidates) <= size:
        return candidates
    return np.sort(np.random.default_rng(seed).choice(candidates, size=size, replace=False))


def profile_run(run_date: str, model_version: str, feature_service: str, frame: pd.DataFrame,
                columns: list[str], embeddings: np.ndarray, nearest: np.ndarray,
                volumes: dict[str, dict[str, int]], reference: dict[str, Any] | None,
                config: DriftConfig) -> dict[str, Any]:
    """The run's own profile (its bins), plus its nearest-anchor counts on the reference's bins."""
    near = pd.Series(nearest, dtype="float64")
    embedding: dict[str, Any] = {
        "rows": int(len(embeddings)),
        "mean": embeddings.mean(axis=0).round(6).tolist() if len(embeddings) else [],
        "total_variance": float(embeddings.var(axis=0).sum()) if len(embeddings) else 0.0,
        "nearest_anchor": feature_profile(near, config.bins, config.top_categories, config.min_category_count),
        "nearest_anchor_median": round(float(np.median(nearest)), 5) if len(nearest) else None,
    }
    if reference is not None and "embedding" in reference:
        embedding["nearest_anchor_on_reference_bins"] = counts_on_reference_bins(
            reference["embedding"]["nearest_anchor"], near).tolist()
    return {
        "run_date": run_date, "model_version": str(model_version), "feature_service": feature_service,
        "sample_customers": int(len(frame)), "created_at": utc_now(),
        "features": {c: feature_profile(frame[c], config.bins, config.top_categories, config.min_category_count)
                     for c in columns},
        "embedding": embedding, "volumes": volumes,
    }


def load_live_profile(drift_root: Path) -> dict[str, Any] | None:
    from index_builder.bundle import CURRENT_FILE, current_path

    if not (drift_root / CURRENT_FILE).is_file():
        return None
    path = current_path(drift_root, "drift profile") / PROFILE_FILE
    return dict(read_json(path)) if path.is_file() else None


def check_weekly(config: DriftConfig, drift_root: Path, out_dir: Path, *, store: Any, population: Any,
                 encoder: Any, model_version: str, bundle: Any, segments_dir: Path,
                 report_dir: Path | None) -> DriftReport:
    """Profile this run, compare with the live profile, write ``out_dir`` and annotate the run.

    Raises :class:`DriftBlocked` on FAIL without ``accept_fail``, after moving the drift
    report to ``<drift_root>/rejected/<run_date>`` for the operator to read.
    """
    from index_builder.features import embed_frame, point_in_time_features
    from lookalike.artifacts import replace_dir

    run_date = population.as_of.date().isoformat()
    eligible = population.customer_ids[population.lookalike_mask]
    ids = sample_rows(eligible if len(eligible) else population.customer_ids, config.sample_size, config.seed)
    frame, found = point_in_time_features(store, population.contract, ids, population.as_of)
    embeddings = embed_frame(encoder, frame[found].reset_index(drop=True), desc="embed drift sample")
    nearest = bundle.search(embeddings, k=1)[0][:, 0] if len(embeddings) else np.zeros(0, np.float32)
    volumes = read_json(segments_dir / "manifest.json").get("volumes", {})
    reference = load_live_profile(drift_root)
    profile = profile_run(run_date, model_version, population.feature_service, frame, encoder.contract.columns,
                          embeddings, nearest, volumes, reference, config)
    report = build_report(reference, profile, frame, config)
    report.accepted_override = report.verdict == FAIL and config.accept_fail
    if (~found).any():
        report.notes.append(f"{int((~found).sum())} of {len(ids)} sampled customers had no features in the TTL")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / PROFILE_FILE, profile)
    write_json(out_dir / REPORT_JSON, report.to_dict())
    (out_dir / REPORT_MD).write_text(to_markdown(report))
    plot_psi(report, out_dir / PLOT_FILE, config.thresholds)
    write_manifest(out_dir, DRIFT_KIND, run_date=run_date, verdict=report.verdict,
                   compared_with=report.compared_with, accepted_override=report.accepted_override,
                   model_version=str(model_version), thresholds=asdict(config.thresholds))
    log.info("drift: %s", report.summary())
    if report.verdict == FAIL and not config.accept_fail:
        rejected = drift_root / "rejected" / run_date
        replace_dir(out_dir, rejected)
        raise DriftBlocked(
            f"weekly run {run_date} blocked by input drift ({report.summary()}); last published outputs stay "
            f"live; report: {rejected / REPORT_MD}; rerun with --accept-drift (drift.accept_fail=true) to publish")
    record = {"verdict": report.verdict, "compared_with": report.compared_with,
              "accepted_override": report.accepted_override}
    annotate_manifest(segments_dir, drift=record)
    if report_dir is not None:
        attach_to_report(report_dir, report, out_dir / PLOT_FILE)
    return report


def annotate_manifest(directory: Path, **fields: Any) -> None:
    """Add fields to an artifact's manifest (its content hash excludes the manifest itself)."""
    manifest = read_json(directory / "manifest.json")
    write_json(directory / "manifest.json", {**manifest, **fields})


def attach_to_report(report_dir: Path, report: DriftReport, plot: Path | None = None) -> None:
    """Append the drift section to the evaluation report (md, html, metrics.json) and re-hash it."""
    import html
    import shutil

    if (report_dir / "report.md").is_file():
        with open(report_dir / "report.md", "a") as handle:
            handle.write("\n" + to_markdown(report, heading="##"))
    if plot is not None and plot.is_file():
        shutil.copyfile(plot, report_dir / PLOT_FILE)
    page = report_dir / "report.html"
    if page.is_file():
        section = (f"<h2>Drift against the previous run</h2><p><b>Drift verdict: {html.escape(report.verdict)}</b>"
                   f" — {html.escape(report.summary())}</p>")
        if (report_dir / PLOT_FILE).is_file():
            section += f'<img src="{PLOT_FILE}" alt="input drift" style="max-width:100%">'
        frames = [pd.DataFrame(rows) for rows in (report.features[:25], report.embedding,
                                                  [r for r in report.volumes if r["status"] in (WARN, FAIL)]) if rows]
        section += "".join(f.to_html(index=False, border=0, na_rep="-") for f in frames)
        page.write_text(page.read_text().replace("</body>", section + "</body>"))
    metrics_path = report_dir / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics["drift"] = report.to_dict()
        metrics_path.write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    if (report_dir / "manifest.json").is_file():
        annotate_manifest(report_dir, content_hash=sha256_tree(report_dir), drift_verdict=report.verdict)
