"""Who the customers are at a run date, read from any Feast repo that follows the contract.

Only the contract is assumed (``feature_repo/README.md``): a ``customer`` entity, one
feature service tagged ``lookalike_role=model_input`` and views tagged
``lookalike_role`` = ``labels`` / ``consent`` / (optional) ``suppression``. Model inputs go
through :func:`lookalike.contract.load_contract` (the privacy guard) and the snapshot
stage's point-in-time retrieval; the role views are read point-in-time one view at a time
(a multi-view join in the file offline store drops customers missing from any one view).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lookalike.contract import JOIN_KEY, FeatureContract, find_view_by_role, load_contract
from lookalike.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)


def parse_date(value: str) -> datetime:
    if not value:
        raise ConfigError("a run date is required (date=YYYY-MM-DD or --date)")
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError(f"run date {value!r} is not an ISO date (YYYY-MM-DD)") from exc
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def _ids_in_window(view: Any, as_of: datetime) -> np.ndarray:
    """Customer ids with a row of ``view`` inside its TTL window ending at ``as_of``."""
    from lookalike.snapshot import read_view_as_of

    return np.unique(read_view_as_of(view, pd.Timestamp(as_of))[JOIN_KEY].to_numpy(dtype=np.int64))


@dataclass
class Population:
    """Every customer known at ``as_of`` with consent, suppression and (opt-in) labels."""

    as_of: datetime
    customer_ids: np.ndarray  # int64, sorted
    opt_in: np.ndarray  # bool
    suppressed: np.ndarray  # bool
    has_labels: np.ndarray  # bool: opt-in with a labels row inside its TTL
    segment_lists: list[list[str]]  # explicit segments (empty for non-opt-in)
    feature_service: str
    contract: FeatureContract
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def anchor_mask(self) -> np.ndarray:
        """Opt-in customers with valid consent and a labels row who have not objected to
        profiling (objectors are never embedded): the index anchors."""
        return self.opt_in & self.has_labels & ~self.suppressed

    @property
    def lookalike_mask(self) -> np.ndarray:
        """Customers who may receive lookalike segments: not opt-in and not suppressed."""
        return ~self.opt_in & ~self.suppressed

    def label_matrix(self, rows: np.ndarray, segments: list[str]) -> sp.csr_matrix:
        """Binary (len(rows) x len(segments)) matrix of explicit segments, vocabulary order."""
        position = {s: j for j, s in enumerate(segments)}
        indptr = [0]
        indices: list[int] = []
        unknown: set[str] = set()
        for row in np.asarray(rows):
            for seg in self.segment_lists[int(row)]:
                j = position.get(seg)
                if j is None:
                    unknown.add(seg)
                else:
                    indices.append(j)
            indptr.append(len(indices))
        if unknown:
            log.warning("%d segment id(s) not in the model vocabulary are ignored: %s",
                        len(unknown), sorted(unknown)[:10])
        data = np.ones(len(indices), dtype=np.uint8)
        matrix = sp.csr_matrix((data, np.asarray(indices, dtype=np.int64), np.asarray(indptr)),
                               shape=(len(rows), len(segments)))
        matrix.sum_duplicates()
        matrix.data[:] = 1
        return matrix


def load_population(store: Any, as_of: datetime, feature_service: str | None = None) -> Population:
    """Consent, suppression and labels of every customer at ``as_of``; guards the model contract.

    Status views are read with the snapshot stage's as-of reader (same TTL window as Feast's
    point-in-time join; Feast itself cannot enumerate customers), so "opt-in at D" means
    exactly what it means in the training snapshot.
    """
    from lookalike.contract import find_model_service
    from lookalike.snapshot import opted_in_customers, read_view_as_of, suppressed_customers

    stamp = pd.Timestamp(as_of)
    service = feature_service or find_model_service(store)
    contract = load_contract(store, service)  # privacy guard: refuses non-legitimate-interest inputs
    consent_view = find_view_by_role(store, "consent")
    labels_view = find_view_by_role(store, "labels")
    assert consent_view is not None and labels_view is not None
    universe = [_ids_in_window(consent_view, as_of)]
    for view_name in contract.views:
        universe.append(_ids_in_window(store.get_feature_view(view_name), as_of))
    ids = np.unique(np.concatenate(universe)).astype(np.int64)
    if len(ids) == 0:
        raise DataValidationError(
            f"no customer has a consent or feature row in the TTL window ending {as_of.date()}; "
            "is the run date right and are the feature tables written?"
        )
    opt_in = np.isin(ids, opted_in_customers(store, stamp))
    suppressed = np.isin(ids, suppressed_customers(store, stamp))
    list_fields = [f.name for f in labels_view.features if str(f.dtype).startswith("Array")]
    if not list_fields:
        raise DataValidationError(
            f"labels view {labels_view.name} has no list field (expected segments: list<string>)")
    labels = read_view_as_of(labels_view, stamp, [list_fields[0]])
    labels = labels[labels[JOIN_KEY].isin(ids[opt_in])]
    position = np.searchsorted(ids, labels[JOIN_KEY].to_numpy(dtype=np.int64))
    segment_lists: list[list[str]] = [[] for _ in range(len(ids))]
    has_labels = np.zeros(len(ids), dtype=bool)
    for row, value in zip(position, labels[list_fields[0]].tolist(), strict=True):
        segment_lists[row] = sorted({str(s) for s in value}) if value is not None else []
        has_labels[row] = True
    population = Population(as_of, ids, opt_in, suppressed, has_labels, segment_lists, service, contract)
    population.notes = {
        "customers": int(len(ids)), "opt_in": int(opt_in.sum()), "anchors": int(population.anchor_mask.sum()),
        "opt_in_without_labels": int((opt_in & ~has_labels).sum()), "suppressed": int(suppressed.sum()),
    }
    log.info("population at %s: %s", as_of.date(), population.notes)
    return population
