"""Governance review of the APPLIED Feast registry (``lookalike governance review``).

Lists every feature view with its legal basis, owner, PII flag, domain, field count and
the feature services that include it, then gives a verdict: PASS only if every model-input
service (tag ``lookalike_role=model_input``) passes the privacy guard (the same checks as
:func:`lookalike.contract.load_contract`: legal basis, PII, sensitive domains, the repo's deny
list, on-demand/derived views, and the recorded fingerprint of its published version) and
every field of those views has a valid ``encoding`` tag. ``lookalike governance record``
publishes the fingerprints (``contract_fingerprints.json``). The privileged view (tag
``lookalike_role=privileged``, the teacher's consented inputs) is listed with its legal basis
and its single permitted use, and must pass :func:`lookalike.privileged.check_privileged_view`.
Writes ``governance_review.md``
and ``governance_review.json`` atomically; the CLI exits non-zero on FAIL.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lookalike.artifacts import atomic_write_text, utc_now, write_json
from lookalike.config import load_config, stage_config
from lookalike.contract import (
    ENCODING_TAG,
    ENCODINGS,
    LEGAL_BASIS_TAG,
    ROLE_TAG,
    check_model_input_views,
    describe_service,
    service_views,
    store_repo,
)
from lookalike.contract_fingerprint import ContractChangedError, check_against_record
from lookalike.contract_fingerprint import record as record_fingerprint
from lookalike.errors import PrivacyViolationError
from lookalike.feast_utils import open_store
from lookalike.privacy_policy import load_policy
from lookalike.privileged import PERMITTED_USE, PRIVILEGED_ROLE, check_privileged_view

GOVERNANCE_TAGS = (LEGAL_BASIS_TAG, "domain", "pii")


@stage_config
class GovernanceConfig:
    repo: Path = Path("feature_repo")
    # None: print only; else write governance_review.{md,json} into this directory.
    out: Path | None = None


@dataclass
class ViewReview:
    name: str
    legal_basis: str
    owner: str
    pii: str
    domain: str
    role: str
    online: bool
    field_count: int
    services: list[str]
    missing_governance: list[str]
    fields_without_description: list[str]
    fields_without_encoding: list[str]
    # what the view may be used for when that is narrower than its services say (privileged view)
    permitted_use: str = ""


@dataclass
class ServiceReview:
    name: str
    version: str
    role: str
    views: list[str]
    verdict: str
    problems: list[str]
    # recorded | unrecorded | changed: the service against its published fingerprint
    fingerprint: str = ""


@dataclass
class GovernanceReport:
    repo: str
    project: str
    reviewed_at: str
    views: list[ViewReview]
    services: list[ServiceReview]
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def _review_view(view: Any, services: list[str]) -> ViewReview:
    tags = dict(view.tags or {})
    return ViewReview(
        name=view.name,
        legal_basis=tags.get(LEGAL_BASIS_TAG, "MISSING"),
        owner=view.owner or "MISSING",
        pii=tags.get("pii", "MISSING"),
        domain=tags.get("domain", "MISSING"),
        role=tags.get(ROLE_TAG, ""),
        online=bool(view.online),
        field_count=len(view.features),
        services=services,
        missing_governance=[t for t in GOVERNANCE_TAGS if t not in tags]
        + (["owner"] if not view.owner else []) + (["description"] if not view.description else []),
        fields_without_description=[f.name for f in view.features if not f.description],
        fields_without_encoding=[f.name for f in view.features
                                 if (f.tags or {}).get(ENCODING_TAG) not in ENCODINGS],
        permitted_use=PERMITTED_USE if tags.get(ROLE_TAG) == PRIVILEGED_ROLE else "",
    )


def review(store: Any, repo: str = "") -> GovernanceReport:
    views = {v.name: v for v in store.list_feature_views()}
    services = store.list_feature_services()
    membership: dict[str, list[str]] = {name: [] for name in views}
    for service in services:
        for projection in service.feature_view_projections:
            membership.setdefault(projection.name, []).append(service.name)

    view_reviews = [_review_view(views[name], sorted(membership.get(name, []))) for name in sorted(views)]
    by_name = {v.name: v for v in view_reviews}
    problems: list[str] = []
    for item in view_reviews:
        if item.missing_governance:
            problems.append(f"view {item.name}: missing governance metadata {item.missing_governance}")
        if item.fields_without_description:
            problems.append(f"view {item.name}: fields without description {item.fields_without_description}")
        if item.role == PRIVILEGED_ROLE:
            view = views[item.name]
            problems += check_privileged_view(item.name, dict(view.tags or {}), bool(view.online),
                                              [(f.name, dict(f.tags or {})) for f in view.features])

    service_reviews = []
    for service in sorted(services, key=lambda s: s.name):
        tags = dict(service.tags or {})
        names = [p.name for p in service.feature_view_projections]
        service_problems: list[str] = []
        fingerprint = ""
        if tags.get(ROLE_TAG) == "model_input":
            fingerprint, guard_problems = _guard_service(store, service)
            service_problems += guard_problems
            for name in names:
                missing = by_name[name].fields_without_encoding if name in by_name else ["<view not found>"]
                if missing:
                    service_problems.append(f"view {name}: model-input fields without a valid encoding tag {missing}")
        problems += service_problems
        service_reviews.append(ServiceReview(
            name=service.name, version=str(tags.get("version", "")), role=tags.get(ROLE_TAG, ""),
            views=names, verdict="FAIL" if service_problems else "PASS", problems=service_problems,
            fingerprint=fingerprint,
        ))
    if not any(s.role == "model_input" for s in service_reviews):
        problems.append(f"no feature service is tagged {ROLE_TAG}=model_input")
    return GovernanceReport(repo=repo, project=store.project, reviewed_at=utc_now(), views=view_reviews,
                            services=service_reviews, problems=problems)


def _guard_service(store: Any, service: Any) -> tuple[str, list[str]]:
    """(fingerprint status, problems): the privacy guard and the published-fingerprint check,
    exactly as :func:`lookalike.contract.load_contract` applies them."""
    repo = store_repo(store)
    problems: list[str] = []
    try:
        facts = service_views(store, service)
        check_model_input_views(service.name, facts.values(), load_policy(repo))
    except PrivacyViolationError as exc:
        return "", [str(exc)]
    try:
        status = check_against_record(repo, describe_service(service, facts))
    except ContractChangedError as exc:
        status = "changed"
        problems.append(str(exc))
    return status, problems


def record(store: Any) -> dict[str, str]:
    """Record the fingerprint of every model-input service version that passes the guard
    (``lookalike governance record``); a version already recorded differently is refused."""
    repo = store_repo(store)
    if repo is None:
        raise PrivacyViolationError("the store has no repo directory to record fingerprints in")
    recorded: dict[str, str] = {}
    for service in store.list_feature_services():
        if (service.tags or {}).get(ROLE_TAG) != "model_input":
            continue
        facts = service_views(store, service)
        check_model_input_views(service.name, facts.values(), load_policy(repo))
        description = describe_service(service, facts)
        recorded[f"{service.name} v{description['version']}"] = record_fingerprint(repo, description)
    return recorded


def to_markdown(report: GovernanceReport) -> str:
    lines = [
        f"# Governance review — project `{report.project}`",
        "",
        f"Registry of `{report.repo}`, reviewed {report.reviewed_at}. **Verdict: {report.verdict}**",
        "",
        "## Feature views",
        "",
        "| view | legal basis | owner | PII | domain | role | online | fields | feature services |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in report.views:
        lines.append(f"| `{v.name}` | {v.legal_basis} | {v.owner} | {v.pii} | {v.domain} | {v.role or '-'} | "
                     f"{'yes' if v.online else 'no'} | {v.field_count} | {', '.join(v.services) or '-'} |")
    privileged = [v for v in report.views if v.permitted_use]
    if privileged:
        lines += ["", "## Privileged views (teacher inputs)", "", "| view | legal basis | permitted use |",
                  "|---|---|---|"]
        lines += [f"| `{v.name}` | {v.legal_basis} | {v.permitted_use} |" for v in privileged]
    lines += ["", "## Feature services", "", "| service | version | role | views | fingerprint | verdict |",
              "|---|---|---|---|---|---|"]
    for s in report.services:
        lines.append(f"| `{s.name}` | {s.version or '-'} | {s.role or '-'} | {', '.join(s.views)} | "
                     f"{s.fingerprint or '-'} | {s.verdict} |")
    lines += ["", "## Problems", ""]
    lines += [f"- {p}" for p in report.problems] or ["None: every model-input service holds legitimate-interest "
                                                      "views only, and every field is described and encoded."]
    return "\n".join(lines) + "\n"


def _print_table(report: GovernanceReport) -> None:
    header = f"{'view':22s} {'legal_basis':20s} {'pii':4s} {'domain':12s} {'fields':>6s}  services"
    print(header)
    print("-" * len(header))
    for v in report.views:
        print(f"{v.name:22s} {v.legal_basis:20s} {v.pii:4s} {v.domain:12s} {v.field_count:6d}  "
              f"{', '.join(v.services) or '-'}")
    for v in report.views:
        if v.permitted_use:
            print(f"privileged view {v.name} ({v.legal_basis}): {v.permitted_use}")
    for s in report.services:
        print(f"service {s.name} (v{s.version or '?'}, role={s.role or '-'}"
              f"{', fingerprint ' + s.fingerprint if s.fingerprint else ''}): {s.verdict}")
    for problem in report.problems:
        print(f"  FAIL: {problem}")
    print(f"verdict: {report.verdict}")


def run(config: GovernanceConfig) -> GovernanceReport:
    store = open_store(config.repo)
    report = review(store, str(Path(config.repo).resolve()))
    if config.out is not None:
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "governance_review.md", to_markdown(report))
        write_json(out / "governance_review.json", report.to_dict())
    return report


def add_cli(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="governance_command", metavar="ACTION", required=True)
    review_parser = sub.add_parser("review", help="review the applied registry; exit 1 on FAIL")
    review_parser.add_argument("--repo", type=Path, default=None, help="applied Feast repo (default feature_repo)")
    review_parser.add_argument("--out", type=Path, default=None, help="directory for governance_review.md/.json")
    review_parser.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    review_parser.add_argument("--system", action="store_true",
                               help="review the whole system: champion, live weekly outputs, drift, audit, suppression")
    review_parser.add_argument("--workspace", type=Path, default=None, help="weekly workspace (--system)")
    review_parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (--system)")
    review_parser.add_argument("--model-name", default=None, help="registered model name (--system)")

    def main(args: argparse.Namespace) -> int:
        if args.system:
            from lookalike.system_review import cli_main

            return cli_main(args)
        overrides = [f"{k}={v}" for k, v in (("repo", args.repo), ("out", args.out)) if v is not None]
        report = run(load_config(GovernanceConfig, None, overrides))
        if args.json:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            _print_table(report)
        return 0 if report.passed else 1

    review_parser.set_defaults(func=main)

    record_parser = sub.add_parser(
        "record", help="publish: record the contract fingerprint of each model-input service version")
    record_parser.add_argument("--repo", type=Path, default=Path("feature_repo"), help="applied Feast repo")

    def record_main(args: argparse.Namespace) -> int:
        for name, digest in record(open_store(args.repo)).items():
            print(f"recorded {name}: {digest[:16]}")
        return 0

    record_parser.set_defaults(func=record_main)

    from lookalike import fairness_audit

    fairness_audit.add_cli(sub)
