"""``lookalike governance review --system``: one review of the champion and the live weekly outputs.

It answers "which model, which data and which legal basis produced this week's table?":

- the registry review (every view's legal basis, owner, PII flag; services' verdicts);
- the champion model version in MLflow, its feature service and version, and its model
  card (a ``model_card*`` artifact of the registered version's run when present, else a
  summary of the run's tags, parameters and metrics);
- the live index bundle and segment table (``<workspace>/{index,segments}/current.json``),
  the feature service version each was built with, and every model input with the legal
  basis of its view;
- the latest drift verdict (``<workspace>/drift``) and fairness audit (``<workspace>/audits``);
- suppression-list enforcement: customers suppressed at the table's run date, and the
  lookalike rows any of them holds in the live table (must be 0).

Verdict FAIL when the registry review fails, a version disagrees, suppression is not
enforced, or the latest drift / audit verdict is FAIL (an accepted drift override is
listed, not failed). Writes ``system_review.md`` / ``.json`` when ``out`` is set.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lookalike.artifacts import atomic_write_text, read_json, utc_now, write_json
from lookalike.config import stage_config
from lookalike.contract import LEGAL_BASIS_TAG
from lookalike.settings import CHAMPION_ALIAS, DEFAULT_TRACKING_URI, REGISTERED_MODEL_NAME

log = logging.getLogger(__name__)


@stage_config
class SystemReviewConfig:
    repo: Path = Path("feature_repo")
    workspace: Path = Path("artifacts")
    tracking_uri: str = DEFAULT_TRACKING_URI
    model_name: str = REGISTERED_MODEL_NAME
    alias: str = CHAMPION_ALIAS
    out: Path | None = None


@dataclass
class SystemReview:
    reviewed_at: str
    registry: dict[str, Any]
    champion: dict[str, Any]
    model_card: dict[str, Any]
    live: dict[str, Any]
    inputs: list[dict[str, str]]
    drift: dict[str, Any]
    audit: dict[str, Any]
    suppression: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "FAIL" if self.problems else "PASS"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def _live(root: Path) -> tuple[Path | None, dict[str, Any]]:
    pointer = root / "current.json"
    if not pointer.is_file():
        return None, {}
    directory = root / str(read_json(pointer)["name"])
    manifest = directory / "manifest.json"
    return directory, (dict(read_json(manifest)) if manifest.is_file() else {})


def champion_and_card(tracking_uri: str, model_name: str, alias: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The aliased registered version (tags) and its model card artifact or a run summary."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        return {"error": f"no {alias} version of {model_name} in {tracking_uri}: {exc.message}"}, {}
    run_id = str(version.run_id)
    tags: dict[str, str] = dict(version.tags or {})
    champion = {"name": model_name, "alias": alias, "version": str(version.version), "run_id": run_id, "tags": tags}
    run = client.get_run(run_id)
    cards = [a.path for a in client.list_artifacts(run_id) if "model_card" in a.path and not a.is_dir]
    for folder in (a.path for a in client.list_artifacts(run_id) if a.is_dir):
        cards += [a.path for a in client.list_artifacts(run_id, folder) if "model_card" in a.path]
    if cards:
        chosen = sorted(cards, key=lambda p: (not p.endswith(".json"), p))[0]
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(client.download_artifacts(run_id, chosen, scratch))
            text = local.read_text()
        card: dict[str, Any] = {"source": f"runs:/{version.run_id}/{chosen}"}
        card["content"] = json.loads(text) if chosen.endswith(".json") else text
        return champion, card
    metrics = {k: round(v, 4) for k, v in run.data.metrics.items()
               if k.startswith(("test_", "best_", "raw_knn")) and "bin" not in k}
    params = {k: v for k, v in run.data.params.items()
              if k.split(".")[0] in ("model", "epochs", "target", "aux_weight", "sampling")}
    return champion, {"source": f"summary of run {version.run_id} (no model_card artifact)",
                      "content": {"run_name": run.info.run_name, "label_date": tags.get("label_date"),
                                  "promotion": tags.get("promotion"), "metrics": metrics,
                                  "params": dict(sorted(params.items())[:40])}}


def suppression_enforcement(store: Any, segments_dir: Path, run_date: str) -> dict[str, Any]:
    import pandas as pd

    from lookalike.snapshot import opted_in_customers, suppressed_customers

    stamp = pd.Timestamp(run_date, tz="UTC")
    suppressed = suppressed_customers(store, stamp)
    table = pd.read_parquet(segments_dir / "segments.parquet", columns=["customer_id", "source"])
    lookalike = table[table["source"] == "lookalike"]
    violating = lookalike[lookalike["customer_id"].isin(suppressed)]
    opted = set(opted_in_customers(store, stamp).tolist())
    return {"run_date": run_date, "suppressed_customers": int(len(suppressed)),
            "suppressed_opt_in_keeping_explicit_segments": int(sum(1 for c in suppressed.tolist() if c in opted)),
            "lookalike_rows_for_suppressed": int(len(violating)),
            "customers_with_violations": int(violating["customer_id"].nunique())}


def review_system(config: SystemReviewConfig) -> SystemReview:
    from lookalike.contract import load_contract
    from lookalike.feast_utils import open_store
    from lookalike.governance import review

    store = open_store(config.repo)
    registry = review(store, str(Path(config.repo).resolve()))
    problems = [f"registry: {p}" for p in registry.problems]
    notes: list[str] = []
    champion, card = champion_and_card(config.tracking_uri, config.model_name, config.alias)
    if "error" in champion:
        problems.append(champion["error"])
    workspace = Path(config.workspace)
    index_dir, index_manifest = _live(workspace / "index")
    segments_dir, segments_manifest = _live(workspace / "segments")
    live = {"index": {"path": str(index_dir) if index_dir else None,
                      **{k: index_manifest.get(k) for k in ("index_version", "model_version", "feature_service",
                                                           "feature_service_version", "run_date", "content_hash")}},
            "segments": {"path": str(segments_dir) if segments_dir else None,
                         **{k: segments_manifest.get(k) for k in ("run_date", "model_version", "index_version",
                                                                  "feature_service", "content_hash", "drift")},
                         "counts": segments_manifest.get("counts", {})}}
    service = champion.get("tags", {}).get("feature_service") or index_manifest.get("feature_service")
    inputs: list[dict[str, str]] = []
    if service:
        contract = load_contract(store, service)
        bases = {v: str((store.get_feature_view(v).tags or {}).get(LEGAL_BASIS_TAG, "MISSING")) for v in contract.views}
        inputs = [{"input": f.column, "view": f.view, "legal_basis": bases[f.view], "encoding": f.encoding}
                  for f in contract.features]
        registry_version = contract.service_version
        for where, version in (("champion", champion.get("tags", {}).get("feature_service_version")),
                               ("live index", index_manifest.get("feature_service_version"))):
            if version is not None and str(version) != str(registry_version):
                problems.append(f"{where} was built on {service} v{version}, the registry serves v{registry_version}")
        not_li = sorted({i["view"] for i in inputs if i["legal_basis"] != "legitimate_interest"})
        if not_li:
            problems.append(f"model inputs from views not held under legitimate interest: {not_li}")
    if segments_dir is None:
        problems.append(f"no live segment table under {workspace / 'segments'}")
    elif champion.get("version") and str(segments_manifest.get("model_version")) != champion["version"]:
        notes.append(f"the live segment table was built with model v{segments_manifest.get('model_version')}, "
                     f"the {config.alias} is v{champion['version']}: the next weekly run will switch")
    if index_dir is not None and segments_manifest.get("index_version") not in (None, index_manifest.get("index_version")):
        problems.append(f"live segment table index {segments_manifest.get('index_version')} is not the live index "
                        f"{index_manifest.get('index_version')}")

    drift_dir, _ = _live(workspace / "drift")
    drift = dict(read_json(drift_dir / "drift.json")) if drift_dir and (drift_dir / "drift.json").is_file() else {}
    drift = {k: drift.get(k) for k in ("run_date", "compared_with", "verdict", "accepted_override", "flagged")} \
        if drift else {"verdict": "MISSING"}
    if drift["verdict"] == "FAIL":
        (notes if drift.get("accepted_override") else problems).append(
            f"latest drift verdict FAIL ({drift.get('run_date')})"
            + (": published with the --accept-drift override" if drift.get("accepted_override") else ""))
    elif drift["verdict"] == "MISSING":
        notes.append("no drift report: weekly runs write one from the second run on")
    audit_dir, _ = _live(workspace / "audits")
    audit = dict(read_json(audit_dir / "audit.json")) if audit_dir and (audit_dir / "audit.json").is_file() else {}
    audit = {k: audit.get(k) for k in ("run_date", "verdict", "problems", "protected_attributes", "direct_inputs")} \
        if audit else {"verdict": "MISSING"}
    if audit["verdict"] == "FAIL":
        problems.append(f"latest fairness audit FAIL ({audit.get('run_date')}): {len(audit.get('problems') or [])} "
                        "problem(s)")
    elif audit["verdict"] == "MISSING":
        notes.append("no fairness audit yet: run `lookalike governance audit`")
    elif segments_manifest.get("run_date") and audit.get("run_date") != segments_manifest.get("run_date"):
        notes.append(f"the latest audit covers {audit.get('run_date')}, the live table is "
                     f"{segments_manifest.get('run_date')}")

    suppression: dict[str, Any] = {}
    if segments_dir is not None:
        suppression = suppression_enforcement(store, segments_dir, str(segments_manifest.get("run_date")))
        suppression["manifest_suppressed_customers"] = segments_manifest.get("counts", {}).get("suppressed_customers")
        if suppression["lookalike_rows_for_suppressed"]:
            problems.append(f"{suppression['customers_with_violations']} suppressed customer(s) hold "
                            f"{suppression['lookalike_rows_for_suppressed']} lookalike row(s) in the live table")
    return SystemReview(reviewed_at=utc_now(), registry={"verdict": registry.verdict, **registry.to_dict()},
                        champion=champion, model_card=card, live=live, inputs=inputs, drift=drift, audit=audit,
                        suppression=suppression, problems=problems, notes=notes)


def to_markdown(report: SystemReview) -> str:
    champion, live = report.champion, report.live
    lines = ["# System governance review", "", f"Reviewed {report.reviewed_at}. **Verdict: {report.verdict}**", "",
             "## Problems", ""] + ([f"- {p}" for p in report.problems] or ["None."]) + [""]
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    tags = champion.get("tags", {})
    lines += ["## Model", "", f"- {champion.get('alias')}: `{champion.get('name')}` v{champion.get('version')} "
              f"(run `{champion.get('run_id')}`), feature service `{tags.get('feature_service')}` "
              f"v{tags.get('feature_service_version')}, snapshot `{str(tags.get('snapshot_hash'))[:12]}`, "
              f"label date {tags.get('label_date')}",
              f"- model card: {report.model_card.get('source', 'none')}", "", "```", _card_text(report.model_card),
              "```", "",
              "## Live weekly outputs", ""]
    for name in ("index", "segments"):
        item = {k: v for k, v in live[name].items() if k not in ("counts", "drift")}
        lines.append(f"- {name}: " + ", ".join(f"{k}={v}" for k, v in item.items()))
    lines += ["", "## Feature views (registry)", "", "| view | legal basis | owner | PII | services |", "|---|---|---|---|---|"]
    for v in report.registry["views"]:
        lines.append(f"| `{v['name']}` | {v['legal_basis']} | {v['owner']} | {v['pii']} | {', '.join(v['services']) or '-'} |")
    lines += ["", "| service | version | role | verdict |", "|---|---|---|---|"]
    lines += [f"| `{s['name']}` | {s['version']} | {s['role'] or '-'} | {s['verdict']} |"
              for s in report.registry["services"]]
    bases: dict[str, list[str]] = {}
    for item in report.inputs:
        bases.setdefault(f"{item['view']} ({item['legal_basis']})", []).append(item["input"].split("__", 1)[1])
    lines += ["", f"## Model inputs and their legal basis ({len(report.inputs)} inputs)", ""]
    lines += [f"- `{view}`: {', '.join(names)}" for view, names in bases.items()]
    lines += ["", "## Latest checks", "", f"- drift: **{report.drift.get('verdict')}** "
              f"(run {report.drift.get('run_date')} vs {report.drift.get('compared_with')}"
              + (", override accepted" if report.drift.get("accepted_override") else "") + ")",
              f"- fairness audit: **{report.audit.get('verdict')}** (run {report.audit.get('run_date')})"]
    lines += [f"  - {p}" for p in (report.audit.get("problems") or [])[:10]]
    s = report.suppression
    lines += ["", "## Suppression-list enforcement", ""]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in s.items()] or ["- no live segment table"]
    return "\n".join(lines) + "\n"


def _card_text(card: dict[str, Any]) -> str:
    content = card.get("content")
    text = content if isinstance(content, str) else json.dumps(content, indent=2, default=str)
    return text[:3000]


def run(config: SystemReviewConfig) -> SystemReview:
    report = review_system(config)
    if config.out is not None:
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "system_review.md", to_markdown(report))
        write_json(out / "system_review.json", report.to_dict())
    return report


def cli_main(args: Any) -> int:
    """``lookalike governance review --system`` (arguments parsed by :mod:`lookalike.governance`)."""
    from lookalike.config import load_config

    flags = {"repo": args.repo, "out": args.out, "workspace": args.workspace, "tracking_uri": args.tracking_uri,
             "model_name": args.model_name}
    report = run(load_config(SystemReviewConfig, None, [f"{k}={v}" for k, v in flags.items() if v is not None]))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(to_markdown(report))
    return 0 if report.verdict == "PASS" else 1
