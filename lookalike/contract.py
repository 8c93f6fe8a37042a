"""The model's feature contract, read from the applied Feast registry, and the privacy guard.

The Feast registry is the single source of truth for model inputs. A ``FeatureService``
(e.g. ``lookalike_legit_v1``) lists the feature views and fields the model may use; every
view carries governance tags and every field an ``encoding`` tag. Training, index building
and serving all obtain their inputs through :func:`load_contract`, which refuses any
service that includes a view not tagged ``legal_basis=legitimate_interest``, tagged
``pii: yes`` or a sensitive domain, reading a denied source (:mod:`lookalike.privacy_policy`),
or changed since its version was published (:mod:`lookalike.contract_fingerprint`).

Tag vocabulary (see ``feature_repo/README.md``):

- view tags: ``legal_basis`` (``legitimate_interest`` | ``consent``), ``domain``,
  ``pii`` (``yes``: directly identifying, never a model input | ``quasi``: personal
  attributes that identify nobody alone | ``no``), optional ``lookalike_role`` (``labels`` | ``consent`` |
  ``suppression``) marking the views the pipeline needs besides model inputs;
- field tags: ``encoding`` (``numeric`` | ``categorical`` | ``boolean`` |
  ``high_cardinality``);
- feature-service tags: ``version`` and ``lookalike_role=model_input``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lookalike.contract_fingerprint import check_against_record
from lookalike.errors import PrivacyViolationError
from lookalike.privacy_policy import (
    LEGAL_BASIS_TAG,
    LEGITIMATE_INTEREST,
    PrivacyPolicy,
    ViewFacts,
    describe_view,
    load_policy,
    model_input_problems,
)

CONSENT = "consent"
LEGAL_BASES = (LEGITIMATE_INTEREST, CONSENT)
ROLE_TAG = "lookalike_role"
ENCODING_TAG = "encoding"
ENCODINGS = ("numeric", "categorical", "boolean", "high_cardinality")
ENTITY_NAME = "customer"
JOIN_KEY = "customer_id"
# Feast's ``full_feature_names=True`` column naming: "<view>__<field>".
COLUMN_SEPARATOR = "__"


@dataclass(frozen=True)
class FeatureSpec:
    """One model input column, as declared in the registry."""

    view: str
    name: str
    dtype: str
    encoding: str
    description: str = ""

    @property
    def column(self) -> str:
        return f"{self.view}{COLUMN_SEPARATOR}{self.name}"


@dataclass(frozen=True)
class FeatureContract:
    """What a model consumes: a named, versioned list of legitimate-interest features."""

    service_name: str
    service_version: str
    features: tuple[FeatureSpec, ...]

    @property
    def columns(self) -> list[str]:
        return [f.column for f in self.features]

    @property
    def views(self) -> list[str]:
        return sorted({f.view for f in self.features})

    @property
    def feature_refs(self) -> list[str]:
        """``view:field`` references, the form Feast's retrieval APIs accept."""
        return [f"{f.view}:{f.name}" for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        return {
            "service_name": self.service_name,
            "service_version": self.service_version,
            "features": [asdict(f) for f in self.features],
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> FeatureContract:
        return cls(
            service_name=payload["service_name"],
            service_version=str(payload["service_version"]),
            features=tuple(FeatureSpec(**f) for f in payload["features"]),
        )


def check_views_are_legitimate_interest(
    service_name: str, views: Iterable[tuple[str, dict[str, str]]]
) -> None:
    """Raise :class:`PrivacyViolationError` naming every view not tagged legitimate interest.

    ``views`` is ``(view_name, view_tags)`` pairs. Kept free of Feast types so the rule
    itself is trivially testable and reusable (governance review, trainer, serving).
    """
    offending = []
    for name, tags in views:
        basis = (tags or {}).get(LEGAL_BASIS_TAG)
        if basis != LEGITIMATE_INTEREST:
            offending.append(f"{name} (legal_basis={basis or 'missing'})")
    if offending:
        raise PrivacyViolationError(
            f"feature service {service_name!r} includes feature view(s) not tagged "
            f"legal_basis={LEGITIMATE_INTEREST}: {', '.join(offending)}. Only legitimate-"
            "interest features may build model inputs; remove these views from the service."
        )


def check_model_input_views(service_name: str, views: Iterable[ViewFacts], policy: PrivacyPolicy) -> None:
    """Raise :class:`PrivacyViolationError` naming every view that may not feed the model.

    Legal basis is only the first test: see :func:`lookalike.privacy_policy.model_input_problems`
    (PII, sensitive domains, the repo's deny list of tables and columns, on-demand and derived
    views reading any of those).
    """
    offending = [f"{view.name} ({', '.join(problems)})" for view in views
                 if (problems := model_input_problems(view, policy))]
    if offending:
        raise PrivacyViolationError(
            f"feature service {service_name!r} includes feature view(s) that may not build model inputs: "
            f"{'; '.join(offending)}. Only legitimate-interest, non-sensitive features may (policy: "
            f"{policy.origin}); remove these views from the service."
        )


def _dtype_name(dtype: Any) -> str:
    # Feast types print as e.g. "Float32", "Int64", "String", "Bool", "Array(String)".
    return str(dtype)


def store_repo(store: Any) -> Path | None:
    """The applied repo directory of a ``feast.FeatureStore`` (None for stand-ins without one)."""
    repo = getattr(store, "repo_path", None)
    return Path(repo) if repo else None


def service_views(store: Any, service: Any) -> dict[str, ViewFacts]:
    """:class:`ViewFacts` of every view a feature service projects, by projection name."""
    return {p.name: describe_view(store, p.name) for p in service.feature_view_projections}


def describe_service(service: Any, views: dict[str, ViewFacts]) -> dict[str, Any]:
    """Views, fields, dtypes, tags and sources of a service: what its fingerprint covers."""
    described: dict[str, Any] = {}
    for projection in service.feature_view_projections:
        facts = views[projection.name]
        described[projection.name_to_use()] = {
            **facts.describe(),
            "fields": {f.name: {"dtype": _dtype_name(f.dtype), "tags": dict(sorted((f.tags or {}).items()))}
                       for f in projection.features},
        }
    tags = dict(sorted((service.tags or {}).items()))
    return {"service": service.name, "version": _service_version(service), "tags": tags, "views": described}


def _service_version(service: Any) -> str:
    return str((service.tags or {}).get("version", service.name.rsplit("_v", 1)[-1]))


def load_contract(store: Any, service_name: str) -> FeatureContract:
    """Read ``service_name`` from the applied registry of ``store`` and guard it.

    Every code path that builds model inputs must go through here. Before any feature value
    is read it raises :class:`PrivacyViolationError` when the service includes a view that
    may not feed the model (:func:`check_model_input_views`), and
    :class:`~lookalike.contract_fingerprint.ContractChangedError` when the service differs
    from the fingerprint recorded for its version (changed without a version bump).
    """
    service = store.get_feature_service(service_name)
    repo = store_repo(store)
    views = service_views(store, service)
    check_model_input_views(service_name, views.values(), load_policy(repo))
    contract = _contract_of(service)
    check_against_record(repo, describe_service(service, views))
    return contract


def _contract_of(service: Any) -> FeatureContract:
    """The contract a service declares, unguarded: callers must have guarded its views."""
    features: list[FeatureSpec] = []
    for projection in service.feature_view_projections:
        view_name = projection.name_to_use()
        for field in projection.features:
            encoding = (field.tags or {}).get(ENCODING_TAG)
            if encoding not in ENCODINGS:
                raise PrivacyViolationError(
                    f"field {view_name}:{field.name} has encoding tag {encoding!r}; "
                    f"every model input must declare one of {ENCODINGS}"
                )
            features.append(
                FeatureSpec(
                    view=view_name,
                    name=field.name,
                    dtype=_dtype_name(field.dtype),
                    encoding=encoding,
                    description=field.description or "",
                )
            )
    return FeatureContract(service_name=service.name, service_version=_service_version(service),
                           features=tuple(features))


def find_view_by_role(store: Any, role: str, required: bool = True) -> Any | None:
    """The single feature view tagged ``lookalike_role=<role>`` (labels, consent, suppression)."""
    matches = [v for v in store.list_feature_views() if (v.tags or {}).get(ROLE_TAG) == role]
    if len(matches) > 1:
        names = ", ".join(v.name for v in matches)
        raise PrivacyViolationError(f"more than one feature view has {ROLE_TAG}={role}: {names}")
    if not matches:
        if required:
            from lookalike.errors import ConfigError

            raise ConfigError(
                f"no feature view is tagged {ROLE_TAG}={role}; the feature repo contract needs one"
            )
        return None
    return matches[0]


def find_model_service(store: Any) -> str:
    """Name of the one feature service tagged ``lookalike_role=model_input``."""
    from lookalike.errors import ConfigError

    names = [s.name for s in store.list_feature_services() if (s.tags or {}).get(ROLE_TAG) == "model_input"]
    if len(names) != 1:
        raise ConfigError(
            f"expected exactly one feature service tagged {ROLE_TAG}=model_input, found {names}; "
            "name one explicitly with feature_service=..."
        )
    return names[0]


def cast_to_contract(frame: Any, contract: FeatureContract, errors: str = "raise") -> Any:
    """One pandas dtype per Feast type, whatever the source wrote, so offline snapshots and
    online reads hand the model identical dtypes (numbers float64, Bool ``boolean``,
    String object with ``None`` for missing)."""
    import pandas as pd

    for spec in contract.features:
        column = frame[spec.column]
        if spec.dtype in ("Float64", "Float32", "Int64", "Int32"):
            frame[spec.column] = pd.to_numeric(column, errors=errors).astype("float64")
        elif spec.dtype == "Bool":
            frame[spec.column] = column.astype("boolean")
        elif spec.dtype == "String":
            frame[spec.column] = column.astype("object").where(column.notna(), None)
    return frame
