"""Online feature reads for serving: contract features and consent/suppression status.

``OnlineFeatureReader(store, contract).read(ids)`` returns the contract columns for each
customer (same names and dtypes as the training snapshot) and a ``found`` mask: a customer
with no row in any model-input view is an unknown customer, reported, never an exception.
When the online store is unreachable it raises :class:`OnlineStoreUnavailable` (the
serving layer maps it to HTTP 503).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lookalike.contract import JOIN_KEY, FeatureContract, find_view_by_role
from lookalike.errors import LookalikeError


class OnlineStoreUnavailable(LookalikeError):
    """The online store (Redis) cannot be reached or answered with an error."""


def _is_unavailable(exc: BaseException) -> bool:
    try:
        import redis.exceptions as redis_errors
    except ImportError:  # pragma: no cover - redis is a dependency
        return False
    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, (redis_errors.ConnectionError, redis_errors.TimeoutError, ConnectionError, TimeoutError)):
            return True
        chain = chain.__cause__ or chain.__context__
    return False


def _cast(frame: pd.DataFrame, contract: FeatureContract) -> pd.DataFrame:
    for spec in contract.features:
        column = frame[spec.column]
        if spec.dtype in ("Float64", "Float32", "Int64", "Int32"):
            frame[spec.column] = pd.to_numeric(column, errors="coerce").astype("float64")
        elif spec.dtype == "Bool":
            frame[spec.column] = column.astype("boolean")
        elif spec.dtype == "String":
            frame[spec.column] = column.astype("object").where(column.notna(), None)
    return frame


class OnlineFeatureReader:
    """Reads a :class:`FeatureContract`'s features from the Feast online store."""

    def __init__(self, store: Any, contract: FeatureContract) -> None:
        self.store = store
        self.contract = contract
        self._consent = find_view_by_role(store, "consent", required=False)
        self._suppression = find_view_by_role(store, "suppression", required=False)

    def _online(self, refs: list[str], ids: np.ndarray) -> dict[str, list[Any]]:
        try:
            response = self.store.get_online_features(
                features=refs, entity_rows=[{JOIN_KEY: int(i)} for i in ids], full_feature_names=True
            )
            return dict(response.to_dict())
        except Exception as exc:
            if _is_unavailable(exc):
                raise OnlineStoreUnavailable(f"online store unavailable: {exc}") from exc
            raise

    def read(self, customer_ids: Sequence[int] | np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
        """``(frame, found)``: contract columns per requested id (in order) and who is known."""
        ids = np.asarray(customer_ids, dtype=np.int64)
        if len(ids) == 0:
            empty = pd.DataFrame({JOIN_KEY: ids, **{c: [] for c in self.contract.columns}})
            return _cast(empty, self.contract), np.zeros(0, dtype=bool)
        values = self._online(self.contract.feature_refs, ids)
        frame = pd.DataFrame({JOIN_KEY: ids})
        for column in self.contract.columns:
            frame[column] = values.get(column, [None] * len(ids))
        frame = _cast(frame, self.contract)
        found = frame[self.contract.columns].notna().any(axis=1).to_numpy()
        return frame, found

    def read_status(self, customer_ids: Sequence[int] | np.ndarray) -> pd.DataFrame:
        """``customer_id, opt_in, suppressed`` from the online consent/suppression views.

        A customer absent from a status view is treated conservatively: not opted in, and
        not suppressed unless the suppression view says so.
        """
        ids = np.asarray(customer_ids, dtype=np.int64)
        refs = []
        if self._consent is not None:
            refs.append(f"{self._consent.name}:opt_in")
        if self._suppression is not None:
            refs.append(f"{self._suppression.name}:suppressed")
        values = self._online(refs, ids) if len(ids) and refs else {}
        frame = pd.DataFrame({JOIN_KEY: ids})
        for name, view in (("opt_in", self._consent), ("suppressed", self._suppression)):
            raw = values.get(f"{view.name}__{name}") if view is not None else None
            column = pd.Series(raw if raw is not None else [None] * len(ids), dtype="object")
            frame[name] = column.map(lambda v: bool(v) if v is not None else False).astype(bool)
        return frame
