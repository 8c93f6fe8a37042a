"""The privileged view: consented features a teacher model may learn from, and nothing else.

A feature view tagged ``lookalike_role: privileged`` holds inputs that only opt-in
customers consented to (on the demo repo: web navigation). They never build model inputs:
:func:`lookalike.contract.load_contract` refuses any service that includes them, so the
student encoder, the index builder, assignment and serving never see them. Their single
permitted use is training a *teacher* tower whose embeddings guide the student, and this
module is the only way to read them:

- :func:`load_privileged_contract` finds the view and checks its contract (tagged
  ``legal_basis: consent``, never online, an ``encoding`` tag on every field);
- :func:`read_privileged_features` reads it for a set of customers at a label date and
  refuses, before reading a value, any customer without valid consent at that date.

It is deliberately separate from :func:`lookalike.contract.load_contract` (not a flag on
it): code that embeds non-opt-in customers has no way to ask for privileged columns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from lookalike.contract import (
    CONSENT,
    ENCODING_TAG,
    ENCODINGS,
    JOIN_KEY,
    LEGAL_BASIS_TAG,
    FeatureContract,
    FeatureSpec,
    cast_to_contract,
    find_view_by_role,
)
from lookalike.errors import PrivacyViolationError

PRIVILEGED_ROLE = "privileged"
PERMITTED_USE = (
    "teacher training only: read for opt-in customers with valid consent at the label date, "
    "never a model input, never online, never served"
)


def check_privileged_view(name: str, tags: dict[str, str], online: bool,
                          fields: Iterable[tuple[str, dict[str, str]]]) -> list[str]:
    """Problems that make a view unfit to be the privileged view (empty list: fit).

    Kept free of Feast types so the rule is testable on its own and shared by the loader
    and the governance review.
    """
    problems = []
    basis = (tags or {}).get(LEGAL_BASIS_TAG)
    if basis != CONSENT:
        problems.append(f"privileged view {name} must be tagged {LEGAL_BASIS_TAG}={CONSENT} "
                        f"(found {basis or 'missing'}); legitimate-interest data belongs in the model-input service")
    if online:
        problems.append(f"privileged view {name} has online=True; consented data for the teacher must never "
                        "reach the online store")
    unencoded = [field for field, field_tags in fields if (field_tags or {}).get(ENCODING_TAG) not in ENCODINGS]
    if unencoded:
        problems.append(f"privileged view {name}: fields without a valid {ENCODING_TAG} tag {unencoded}")
    return problems


def load_privileged_contract(store: Any) -> FeatureContract | None:
    """The privileged view as a :class:`FeatureContract` (None when the repo has none).

    Raises :class:`PrivacyViolationError` when the view breaks the rules of
    :func:`check_privileged_view`. Only the teacher's training path may call this.
    """
    view = find_view_by_role(store, PRIVILEGED_ROLE, required=False)
    if view is None:
        return None
    tags = dict(view.tags or {})
    problems = check_privileged_view(view.name, tags, bool(view.online),
                                     [(f.name, dict(f.tags or {})) for f in view.features])
    if problems:
        raise PrivacyViolationError("; ".join(problems))
    features = tuple(
        FeatureSpec(view=view.name, name=f.name, dtype=str(f.dtype), encoding=str((f.tags or {})[ENCODING_TAG]),
                    description=f.description or "")
        for f in view.features
    )
    return FeatureContract(service_name=view.name, service_version=str(tags.get("version", "1")),
                           features=features)


def read_privileged_features(store: Any, contract: FeatureContract, customer_ids: np.ndarray,
                             label_date: pd.Timestamp) -> pd.DataFrame:
    """Privileged columns for ``customer_ids`` as of ``label_date`` (``customer_id`` + contract columns).

    Refuses with :class:`PrivacyViolationError`, before reading any privileged value, when a
    requested customer has no valid consent at ``label_date`` (the consent view's rule, as for
    training anchors). Customers without a row inside the view's TTL get nulls.
    """
    from lookalike.snapshot import opted_in_customers, read_view_as_of

    ids = np.unique(np.asarray(customer_ids, dtype=np.int64))
    consenting = opted_in_customers(store, label_date)
    without_consent = np.setdiff1d(ids, consenting)
    if len(without_consent):
        raise PrivacyViolationError(
            f"{len(without_consent)} of {len(ids)} customer(s) have no valid consent at {label_date.date()} "
            f"(e.g. {without_consent[:5].tolist()}); privileged view {contract.service_name!r} may only be read "
            "for opt-in customers"
        )
    view = store.get_feature_view(contract.service_name)
    fields = [f.name for f in contract.features]
    rows = read_view_as_of(view, label_date, fields)
    rows = rows[rows[JOIN_KEY].isin(ids)].rename(columns={f.name: f.column for f in contract.features})
    frame = pd.DataFrame({JOIN_KEY: np.asarray(customer_ids, dtype=np.int64)}).merge(
        rows[[JOIN_KEY, *contract.columns]], on=JOIN_KEY, how="left")
    return cast_to_contract(frame, contract)


__all__ = [
    "PERMITTED_USE",
    "PRIVILEGED_ROLE",
    "check_privileged_view",
    "load_privileged_contract",
    "read_privileged_features",
]
