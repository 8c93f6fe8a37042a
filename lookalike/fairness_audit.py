"""``lookalike governance audit``: proxy and fairness audit of the live segment table.

Protected attributes are the fields tagged ``protected: "true"`` in the registry and those
listed under ``protected_attributes`` in the repo's ``privacy_policy.yaml`` (in this repo the
profile's ``age``, ``gender`` and ``region_code``: declared beside the views so that the
published feature-service fingerprint does not change); a repo that declares none falls
back to the categorical and boolean fields of views tagged ``pii`` yes or quasi. Numeric
attributes are cut into ``numeric_bands`` quantile bands, attributes with many values keep
their ``max_groups - 1`` most frequent values plus ``other``, and groups smaller than
``min_group_size`` are listed but not judged.

Two questions are answered:

1. **Skew the lookalike model added.** For every segment and attribute, Fairlearn's
   ``MetricFrame`` gives the selection rate per group, separately for opt-in customers
   (explicit segments) and for customers eligible for lookalike segments. The skew of a
   source is the total variation distance between the attribute's distribution among the
   segment's members and among that source's customers, minus what sampling alone
   produces for that many members. A segment is flagged when its lookalike skew exceeds
   its opt-in skew by more than ``max_added_skew``: a demographic segment is *meant* to be
   skewed; the lookalike model must not skew it further.
2. **Proxies.** Every model input that is not itself protected is scored against every
   protected attribute: the one-vs-rest ROC AUC of the input for each group (categorical
   inputs target-encoded out of fold) and the normalised mutual information. An input
   whose AUC reaches ``proxy_auc_limit`` is flagged: it lets the model rebuild the
   attribute. Protected attributes that are model inputs themselves are listed as *direct
   inputs*: they are legitimate-interest data the demographic segments need, and the skew
   check above is what keeps their use in bounds.

Writes ``audit.md`` and ``audit.json`` atomically to ``<workspace>/audits/<run_date>/`` and
points ``<workspace>/audits/current.json`` at it; the CLI exits 1 when the verdict is FAIL.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import Field

from lookalike.artifacts import atomic_dir, read_json, utc_now, write_json
from lookalike.config import Fraction, PositiveInt, stage_config
from lookalike.contract import JOIN_KEY, LEGAL_BASIS_TAG, find_model_service, load_contract
from lookalike.errors import ArtifactError, DataValidationError

log = logging.getLogger(__name__)

PROTECTED_TAG = "protected"
POLICY_FILE = "privacy_policy.yaml"
AUDIT_JSON, AUDIT_MD = "audit.json", "audit.md"


@stage_config
class AuditConfig:
    repo: Path = Path("feature_repo")
    workspace: Path = Path("artifacts")
    # the segment table directory; None: the live one (<workspace>/segments/current.json)
    segments: Path | None = None
    # output directory; None: <workspace>/audits/<run_date>
    out: Path | None = None
    # explicit "view:field" list; empty: fields tagged protected (else pii views' categoricals)
    protected_fields: list[str] = field(default_factory=list)
    numeric_bands: Annotated[int, Field(ge=2)] = 5
    max_groups: Annotated[int, Field(ge=2)] = 8
    min_group_size: PositiveInt = 30
    min_members: PositiveInt = 50
    max_added_skew: Fraction = 0.10
    proxy_auc_limit: Annotated[float, Field(ge=0.5, le=1)] = 0.80
    # customers sampled for the proxy check (AUC standard error ~0.01 at 5,000)
    sample_size: PositiveInt = 5_000
    seed: int = 0


# ---------------------------------------------------------------- protected attributes

def protected_fields(store: Any, explicit: list[str] | None = None) -> tuple[list[tuple[Any, str]], str]:
    """``[(view, field_name)]`` of protected attributes and the rule that selected them.

    In order: ``explicit`` ("view:field"); fields tagged ``protected``; the repo's
    ``privacy_policy.yaml`` ``protected_attributes``; else the categorical and boolean fields
    of views tagged ``pii`` yes or quasi.
    """
    views = {v.name: v for v in store.list_feature_views()}

    def resolve(refs: list[str], origin: str) -> list[tuple[Any, str]]:
        chosen = []
        for ref in refs:
            view_name, _, field_name = str(ref).partition(":")
            if view_name not in views or field_name not in {f.name for f in views[view_name].features}:
                raise DataValidationError(f"protected attribute {ref!r} ({origin}) is not a field of an applied view")
            chosen.append((views[view_name], field_name))
        return chosen

    if explicit:
        return resolve(explicit, "audit config"), "configured protected_fields"
    tagged = [(v, f.name) for v in views.values() for f in v.features
              if str((f.tags or {}).get(PROTECTED_TAG, "")).lower() in ("true", "yes", "1")]
    declared = _policy_protected(store)
    if tagged or declared:
        merged = {(v.name, n): (v, n) for v, n in tagged + resolve(declared, POLICY_FILE)}
        return list(merged.values()), f"fields tagged {PROTECTED_TAG} and {POLICY_FILE} protected_attributes"
    fallback = [(v, f.name) for v in views.values() if (v.tags or {}).get("pii") in ("yes", "quasi")
                for f in v.features if (f.tags or {}).get("encoding") in ("categorical", "boolean")]
    return fallback, "categorical/boolean fields of views tagged pii yes/quasi (nothing declared protected)"


def _policy_protected(store: Any) -> list[str]:
    import yaml

    from lookalike.contract import store_repo

    repo = store_repo(store)
    path = repo / POLICY_FILE if repo is not None else None
    if path is None or not path.is_file():
        return []
    value = (yaml.safe_load(path.read_text()) or {}).get("protected_attributes", [])
    if not isinstance(value, list):
        raise DataValidationError(f"{path}: protected_attributes must be a list of view:field")
    return [str(v) for v in value]


def group_labels(values: pd.Series, numeric_bands: int, max_groups: int) -> pd.Series:
    """One group label per customer: quantile bands for numbers, frequent values otherwise."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce")
        bands = pd.qcut(numbers, numeric_bands, duplicates="drop")
        labels = bands.map(lambda b: f"[{b.left:g}, {b.right:g}]" if isinstance(b, pd.Interval) else b)
        return labels.astype(object).where(numbers.notna(), "missing")
    text = values.astype(object).where(values.notna(), "missing").astype(str)
    frequent = text.value_counts().index[: max_groups - 1]
    return text.where(text.isin(frequent) | (text.nunique() <= max_groups), "other")


# ---------------------------------------------------------------- skew per segment

def composition_skew(selected: np.ndarray, groups: np.ndarray, min_group_size: int) -> tuple[float, dict[str, Any]]:
    """Noise-corrected total variation distance between members' and all customers' groups.

    Uses Fairlearn's MetricFrame for the per-group selection rates; returns the skew and
    the by-group table (rate, customers). Groups under ``min_group_size`` are left out.
    """
    from fairlearn.metrics import MetricFrame, count, selection_rate

    frame = MetricFrame(metrics={"rate": selection_rate, "customers": count}, y_true=selected,
                        y_pred=selected, sensitive_features=pd.Series(groups, name="group"))
    table = frame.by_group
    table = table[table["customers"] >= min_group_size]
    members = table["rate"] * table["customers"]
    if len(table) < 2 or members.sum() == 0:
        return math.nan, {}
    population_share = table["customers"] / table["customers"].sum()
    member_share = members / members.sum()
    raw = 0.5 * float((member_share - population_share).abs().sum())
    m = float(members.sum())
    # expected TVD of m members drawn at random: sum_g sd_g / sqrt(2 pi)
    noise = float(np.sqrt(population_share * (1 - population_share) / m).sum() / math.sqrt(2 * math.pi))
    by_group = {str(g): {"rate": round(float(r), 4), "customers": int(c)}
                for g, r, c in zip(table.index, table["rate"], table["customers"], strict=True)}
    return max(raw - noise, 0.0), by_group


def segment_skew(membership: dict[str, pd.DataFrame], groups: dict[str, pd.Series],
                 config: AuditConfig) -> list[dict[str, Any]]:
    """``membership[source]``: customers x segments bool frame (index customer_id)."""
    rows = []
    for attribute, labels in groups.items():
        for segment in membership["opt_in"].columns:
            row: dict[str, Any] = {"segment": segment, "attribute": attribute}
            for source, table in membership.items():
                selected = table[segment].to_numpy(dtype=bool)
                skew, by_group = composition_skew(selected, labels.reindex(table.index).fillna("missing").to_numpy(),
                                                  config.min_group_size)
                row[f"{source}_members"] = int(selected.sum())
                row[f"{source}_skew"] = None if math.isnan(skew) else round(skew, 4)
                row[f"{source}_by_group"] = by_group
            judged = min(row["opt_in_members"], row["lookalike_members"]) >= config.min_members \
                and row["opt_in_skew"] is not None and row["lookalike_skew"] is not None
            row["added_skew"] = round(row["lookalike_skew"] - row["opt_in_skew"], 4) if judged else None
            row["flagged"] = bool(judged and row["added_skew"] > config.max_added_skew)
            rows.append(row)
    return rows


# ---------------------------------------------------------------- proxies

def _proxy_score(values: pd.Series, target: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """A 1-D score of the input: numbers as they are, categories target-encoded out of fold."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype("float64").fillna(0.5).to_numpy()
    if pd.api.types.is_numeric_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce")
        return numbers.fillna(numbers.median() if numbers.notna().any() else 0.0).to_numpy(dtype=np.float64)
    text = values.astype(object).where(values.notna(), "missing").astype(str).to_numpy()
    score = np.zeros(len(text))
    prior = target.mean()
    for fold in np.unique(folds):
        train = folds != fold
        stats = pd.DataFrame({"v": text[train], "y": target[train]}).groupby("v")["y"].agg(["sum", "count"])
        encoded = (stats["sum"] + 10 * prior) / (stats["count"] + 10)  # smoothed towards the prior
        score[~train] = pd.Series(text[~train]).map(encoded).fillna(prior).to_numpy()
    return score


def proxy_scores(inputs: pd.DataFrame, groups: dict[str, pd.Series], config: AuditConfig) -> list[dict[str, Any]]:
    """AUC (best group, either direction) and normalised mutual information per input x attribute."""
    from sklearn.metrics import mutual_info_score, roc_auc_score

    rng = np.random.default_rng(config.seed)
    folds = rng.integers(0, 5, len(inputs))
    rows = []
    for attribute, labels in groups.items():
        target_labels = labels.reindex(inputs.index).fillna("missing").astype(str).to_numpy()
        counts = pd.Series(target_labels).value_counts()
        judged = [g for g, n in counts.items() if n >= config.min_group_size and len(inputs) - n >= config.min_group_size]
        entropy = float(-(counts / counts.sum() * np.log(counts / counts.sum())).sum())
        for column in inputs.columns:
            best, best_group = 0.5, None
            for group in judged:
                target = (target_labels == group).astype(np.int64)
                auc = float(roc_auc_score(target, _proxy_score(inputs[column], target, folds)))
                auc = max(auc, 1 - auc)
                if auc > best:
                    best, best_group = auc, group
            binned = group_labels(inputs[column], 10, 20).astype(str).to_numpy()
            mi = float(mutual_info_score(target_labels, binned))
            rows.append({"input": column, "attribute": attribute, "auc": round(best, 4), "group": best_group,
                         "normalised_mi": round(mi / entropy, 4) if entropy > 0 else 0.0,
                         "flagged": best >= config.proxy_auc_limit})
    rows.sort(key=lambda r: -r["auc"])
    return rows


# ---------------------------------------------------------------- the audit

@dataclass
class AuditReport:
    run_date: str
    segment_table: str
    model_version: str
    feature_service: str
    protected_attributes: list[str]
    selection_rule: str
    direct_inputs: list[str]
    segments: list[dict[str, Any]]
    proxies: list[dict[str, Any]]
    limits: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    audited_at: str = field(default_factory=utc_now)

    @property
    def problems(self) -> list[str]:
        skewed = [f"segment {r['segment']} x {r['attribute']}: lookalike skew {r['lookalike_skew']:.3f} vs opt-in "
                  f"{r['opt_in_skew']:.3f} (+{r['added_skew']:.3f} > {self.limits['max_added_skew']})"
                  for r in self.segments if r["flagged"]]
        proxies = [f"input {r['input']} predicts {r['attribute']} (AUC {r['auc']:.3f} for group {r['group']} >= "
                   f"{self.limits['proxy_auc_limit']})" for r in self.proxies if r["flagged"]]
        return skewed + proxies

    @property
    def verdict(self) -> str:
        return "FAIL" if self.problems else "PASS"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict, "problems": self.problems}


def _live_dir(root: Path, what: str) -> Path:
    pointer = root / "current.json"
    if not pointer.is_file():
        raise ArtifactError(f"no live {what} under {root} (current.json missing); run `lookalike weekly` first")
    return root / str(read_json(pointer)["name"])


def _membership(table: pd.DataFrame, ids: np.ndarray, source: str, segments: list[str]) -> pd.DataFrame:
    rows = table[table["source"] == source]
    matrix = pd.crosstab(rows["customer_id"], rows["segment"]).clip(upper=1).astype(bool)
    return matrix.reindex(index=ids, columns=segments, fill_value=False)


def audit(store: Any, segments_dir: Path, config: AuditConfig) -> AuditReport:
    from lookalike.snapshot import opted_in_customers, read_view_as_of, suppressed_customers

    manifest = read_json(segments_dir / "manifest.json")
    table = pd.read_parquet(segments_dir / "segments.parquet", columns=["customer_id", "segment", "source"])
    run_date = str(manifest.get("run_date"))
    stamp = pd.Timestamp(run_date, tz="UTC")
    service = manifest.get("feature_service") or find_model_service(store)
    contract = load_contract(store, service)  # the model's inputs, through the privacy guard
    fields, rule = protected_fields(store, config.protected_fields)
    notes: list[str] = []
    if not fields:
        notes.append("no protected attribute is declared: tag fields protected: \"true\" to audit them")
    attribute_values = {}
    for view, name in fields:
        frame = read_view_as_of(view, stamp, [name]).set_index(JOIN_KEY)[name]
        attribute_values[f"{view.name}__{name}"] = frame
    universe = np.unique(np.concatenate([v.index.to_numpy(dtype=np.int64) for v in attribute_values.values()]
                                        or [table["customer_id"].unique()]))
    opt_in = np.intersect1d(universe, opted_in_customers(store, stamp))
    eligible = np.setdiff1d(np.setdiff1d(universe, opt_in), suppressed_customers(store, stamp))
    segments = sorted(table["segment"].unique())
    membership = {"opt_in": _membership(table, opt_in, "opt_in", segments),
                  "lookalike": _membership(table, eligible, "lookalike", segments)}
    groups = {name: group_labels(values, config.numeric_bands, config.max_groups)
              for name, values in attribute_values.items()}
    skew_rows = segment_skew(membership, groups, config) if groups else []

    protected_columns = set(groups)
    direct = sorted(c for c in contract.columns if c in protected_columns)
    candidates = [f for f in contract.features if f.column not in protected_columns]
    sample = np.sort(np.random.default_rng(config.seed).choice(universe, min(config.sample_size, len(universe)),
                                                               replace=False))
    inputs = pd.DataFrame(index=pd.Index(sample, name=JOIN_KEY))
    for view_name in sorted({f.view for f in candidates}):
        names = [f.name for f in candidates if f.view == view_name]
        frame = read_view_as_of(store.get_feature_view(view_name), stamp, names).set_index(JOIN_KEY)
        for name in names:
            inputs[f"{view_name}__{name}"] = frame[name].reindex(sample)
    proxies = proxy_scores(inputs, groups, config) if groups else []
    legal = {f.view: str((store.get_feature_view(f.view).tags or {}).get(LEGAL_BASIS_TAG)) for f in contract.features}
    notes.append(f"{len(opt_in)} opt-in and {len(eligible)} lookalike-eligible customers; proxy check on "
                 f"{len(sample)} customers and {len(candidates)} inputs ({sorted(set(legal.values()))})")
    limits = {k: getattr(config, k) for k in ("max_added_skew", "proxy_auc_limit", "min_members", "min_group_size",
                                              "numeric_bands", "max_groups")}
    return AuditReport(run_date=run_date, segment_table=str(segments_dir.resolve()),
                       model_version=str(manifest.get("model_version")), feature_service=service,
                       protected_attributes=sorted(groups), selection_rule=rule, direct_inputs=direct,
                       segments=skew_rows, proxies=proxies, limits=limits, notes=notes)


def to_markdown(report: AuditReport) -> str:
    lines = [f"# Fairness and proxy audit — {report.run_date}", "",
             f"Segment table `{report.segment_table}` (model v{report.model_version}, `{report.feature_service}`). "
             f"**Verdict: {report.verdict}**", "",
             f"Protected attributes ({report.selection_rule}): "
             + (", ".join(f"`{a}`" for a in report.protected_attributes) or "none"), "",
             "Direct model inputs among them: " + (", ".join(f"`{a}`" for a in report.direct_inputs) or "none")
             + ". They are legitimate-interest data that demographic segments need; the skew check bounds "
             "their effect.", ""]
    lines += [f"- {n}" for n in report.notes] + [""]
    lines += ["## Problems", ""] + ([f"- {p}" for p in report.problems] or ["None."]) + [""]
    judged = [r for r in report.segments if r["added_skew"] is not None]
    judged.sort(key=lambda r: -r["added_skew"])
    lines += [f"## Skew added by the lookalike model (limit +{report.limits['max_added_skew']}; "
              f"{len(judged)} of {len(report.segments)} segment x attribute pairs have enough members)", "",
              "| segment | attribute | opt-in members | opt-in skew | lookalike members | lookalike skew | added | flagged |",
              "|---|---|---|---|---|---|---|---|"]
    for r in judged[:30]:
        lines.append(f"| {r['segment']} | {r['attribute']} | {r['opt_in_members']} | {r['opt_in_skew']:.3f} | "
                     f"{r['lookalike_members']} | {r['lookalike_skew']:.3f} | {r['added_skew']:+.3f} | "
                     f"{'**yes**' if r['flagged'] else 'no'} |")
    lines += ["", f"## Proxies (AUC limit {report.limits['proxy_auc_limit']}; 15 strongest)", "",
              "| input | attribute | AUC | group | normalised MI | flagged |", "|---|---|---|---|---|---|"]
    for r in report.proxies[:15]:
        lines.append(f"| `{r['input']}` | {r['attribute']} | {r['auc']:.3f} | {r['group']} | {r['normalised_mi']:.3f} | "
                     f"{'**yes**' if r['flagged'] else 'no'} |")
    return "\n".join(lines) + "\n"


def run(config: AuditConfig) -> tuple[AuditReport, Path]:
    from lookalike.feast_utils import open_store

    workspace = Path(config.workspace)
    segments_dir = Path(config.segments) if config.segments else _live_dir(workspace / "segments", "segment table")
    if not (segments_dir / "segments.parquet").is_file():
        raise ArtifactError(f"no segments.parquet in {segments_dir}")
    report = audit(open_store(config.repo), segments_dir, config)
    out = Path(config.out) if config.out else workspace / "audits" / report.run_date
    with atomic_dir(out) as tmp:
        (tmp / AUDIT_MD).write_text(to_markdown(report))
        (tmp / AUDIT_JSON).write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    if config.out is None:
        write_json(workspace / "audits" / "current.json", {"name": report.run_date, "updated_at": utc_now()})
    log.info("audit %s: %s (%d problem(s))", report.run_date, report.verdict, len(report.problems))
    return report, out


def add_cli(sub: Any) -> None:
    """Register ``governance audit`` on the governance subparsers."""
    from lookalike.config import load_config

    parser = sub.add_parser("audit", help="fairness and proxy audit of the live segment table; exit 1 on FAIL")
    parser.add_argument("--config", type=Path, default=None, help="YAML with AuditConfig keys")
    parser.add_argument("--repo", type=Path, default=None)
    parser.add_argument("--workspace", type=Path, default=None, help="weekly workspace (default artifacts)")
    parser.add_argument("--segments", type=Path, default=None, help="segment table directory (default: live)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")

    def main(args: argparse.Namespace) -> int:
        overrides = [f"{k}={v}" for k in ("repo", "workspace", "segments", "out")
                     if (v := getattr(args, k)) is not None] + list(args.overrides)
        report, out = run(load_config(AuditConfig, args.config, overrides))
        for problem in report.problems:
            print(f"  FAIL: {problem}")
        print(f"audit {report.run_date}: {report.verdict} ({out / AUDIT_MD})")
        return 0 if report.verdict == "PASS" else 1

    parser.set_defaults(func=main)
