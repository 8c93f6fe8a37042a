"""The privacy guard in depth: what a model-input view may be, beyond its own tags.

A view's ``legal_basis`` tag is written by whoever writes the view, so a lying tag must not
be enough to feed the model. Besides the legal basis, :func:`model_input_problems` refuses a
view when

- it is tagged ``pii: yes`` (directly identifying data) or a sensitive ``domain``
  (``navigation`` by default);
- its source table or any source column is declared sensitive in the repo's deny list,
  ``<repo>/privacy_policy.yaml``, which lives beside the feature views, not in them;
- it is an on-demand or derived view reading any view that is refused for these reasons.

The rules work on :class:`ViewFacts` (plain data read from the registry by
:func:`describe_view`), so they are testable without Feast and reusable by any path that
builds model inputs: :func:`lookalike.contract.load_contract`, the governance review, and
any later, explicitly separate path (e.g. a teacher allowed consent views) that wants the
same facts with a different rule.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lookalike.errors import ConfigError

log = logging.getLogger(__name__)

POLICY_FILE = "privacy_policy.yaml"
LEGAL_BASIS_TAG = "legal_basis"
LEGITIMATE_INTEREST = "legitimate_interest"
PII_TAG = "pii"
DOMAIN_TAG = "domain"
DEFAULT_SENSITIVE_DOMAINS = frozenset({"navigation"})


@dataclass(frozen=True)
class PrivacyPolicy:
    """Sensitive domains and the deny list of source tables and columns (glob patterns)."""

    sensitive_domains: frozenset[str] = DEFAULT_SENSITIVE_DOMAINS
    denied_tables: frozenset[str] = frozenset()
    denied_columns: tuple[str, ...] = ()
    origin: str = "built-in defaults"

    def denied_columns_in(self, columns: Iterable[str]) -> list[str]:
        return sorted({c for c in columns for pattern in self.denied_columns if fnmatch.fnmatchcase(c, pattern)})


def load_policy(repo: str | Path | None) -> PrivacyPolicy:
    """``<repo>/privacy_policy.yaml`` when present, else the built-in defaults.

    Keys: ``sensitive_domains`` (list; ``navigation`` unless the file lists otherwise),
    ``denied_tables`` (source table names: the last component of a file source path, or a
    table name), ``denied_columns`` (source column names, ``fnmatch`` patterns).
    """
    path = Path(repo) / POLICY_FILE if repo is not None else None
    if path is None or not path.is_file():
        return PrivacyPolicy()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"{path}: invalid YAML ({type(exc).__name__})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    # protected_attributes belongs to the fairness audit (lookalike.fairness_audit), not to this guard
    unknown = sorted(set(raw) - {"sensitive_domains", "denied_tables", "denied_columns", "protected_attributes"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}")

    def strings(key: str, default: Iterable[str] = ()) -> list[str]:
        value = raw.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{path}: {key} must be a list of non-empty strings")
        return value

    return PrivacyPolicy(
        sensitive_domains=frozenset(strings("sensitive_domains", DEFAULT_SENSITIVE_DOMAINS)),
        denied_tables=frozenset(strings("denied_tables")),
        denied_columns=tuple(strings("denied_columns")),
        origin=str(path),
    )


@dataclass(frozen=True)
class ViewFacts:
    """What the guard needs to know about one view, read from the registry."""

    name: str
    kind: str  # feature_view | on_demand_feature_view | stream_feature_view
    tags: dict[str, str] = field(default_factory=dict)
    tables: tuple[str, ...] = ()  # source tables read directly
    columns: tuple[str, ...] = ()  # source columns read directly
    upstream: tuple[ViewFacts, ...] = ()  # views an on-demand or derived view reads

    def describe(self) -> dict[str, Any]:
        """Plain data for the contract fingerprint (no paths: they differ per machine)."""
        return {"kind": self.kind, "tags": dict(sorted(self.tags.items())), "tables": sorted(self.tables),
                "upstream": sorted(u.name for u in self.upstream)}


def model_input_problems(view: ViewFacts, policy: PrivacyPolicy) -> list[str]:
    """Why ``view`` may not feed the model (empty when it may)."""
    problems = []
    tags = view.tags
    basis = tags.get(LEGAL_BASIS_TAG)
    if basis != LEGITIMATE_INTEREST:
        problems.append(f"legal_basis={basis or 'missing'}")
    if str(tags.get(PII_TAG, "")).lower() == "yes":
        problems.append("pii=yes")
    if tags.get(DOMAIN_TAG) in policy.sensitive_domains:
        problems.append(f"sensitive domain={tags[DOMAIN_TAG]}")
    tables = sorted(set(view.tables) & policy.denied_tables)
    if tables:
        problems.append(f"reads denied source table(s) {tables}")
    columns = policy.denied_columns_in(view.columns)
    if columns:
        shown = columns[:5] + ([f"... {len(columns) - 5} more"] if len(columns) > 5 else [])
        problems.append(f"reads denied source column(s) {shown}")
    for parent in view.upstream:
        problems += [f"via {parent.name}: {p}" for p in model_input_problems(parent, policy)]
    return problems


def source_table(source: Any) -> str | None:
    """A batch source's table name: the last path component of a file, else its table."""
    path = getattr(source, "path", None)
    if path:
        return Path(str(path).rstrip("/")).name or None
    table = getattr(source, "table", None)
    return str(table).rsplit(".", 1)[-1] if table else None


def _source_columns(view: Any) -> tuple[str, ...]:
    source = getattr(view, "batch_source", None)
    mapping = dict(getattr(source, "field_mapping", None) or {})
    renamed = {feature: column for column, feature in mapping.items()}
    return tuple(renamed.get(f.name, f.name) for f in view.features)


def describe_view(store: Any, name: str, _seen: frozenset[str] = frozenset()) -> ViewFacts:
    """:class:`ViewFacts` of the registered view ``name`` (any kind), with what it reads."""
    from lookalike.errors import PrivacyViolationError

    if name in _seen:
        raise PrivacyViolationError(f"feature view {name!r} reads itself through its sources")
    seen = _seen | {name}
    for getter, kind in (("get_feature_view", "feature_view"),
                         ("get_on_demand_feature_view", "on_demand_feature_view"),
                         ("get_stream_feature_view", "stream_feature_view")):
        try:
            view = getattr(store, getter)(name)
        except Exception:  # noqa: BLE001 - Feast raises a different "not found" type per kind
            continue
        return _facts(store, view, kind, seen)
    raise PrivacyViolationError(f"feature view {name!r} is not in the registry")


def _facts(store: Any, view: Any, kind: str, seen: frozenset[str]) -> ViewFacts:
    upstream: list[ViewFacts] = []
    tables: list[str] = []
    columns: tuple[str, ...] = ()
    if kind == "on_demand_feature_view":
        for projection in (getattr(view, "source_feature_view_projections", None) or {}).values():
            upstream.append(describe_view(store, projection.name, seen))
        for request in (getattr(view, "source_request_sources", None) or {}).values():
            columns += tuple(f.name for f in getattr(request, "schema", []) or [])
    else:
        for parent in getattr(view, "source_views", None) or []:
            upstream.append(describe_view(store, parent.name, seen))
        source = getattr(view, "batch_source", None)
        table = source_table(source) if source is not None else None
        if table and not upstream:
            tables.append(table)
        columns = _source_columns(view)
    return ViewFacts(name=view.name, kind=kind, tags=dict(view.tags or {}), tables=tuple(tables),
                     columns=columns, upstream=tuple(upstream))
