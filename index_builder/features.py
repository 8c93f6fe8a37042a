"""Model-input features and embeddings for a set of customers at a date.

Features come from the offline store through the snapshot stage's point-in-time
retrieval, always with a contract obtained from :func:`lookalike.contract.load_contract`
(the privacy guard). Embedding runs in batches with a progress bar.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from lookalike.contract import JOIN_KEY, FeatureContract
from lookalike.errors import ArtifactError

log = logging.getLogger(__name__)


def check_encoder_contract(encoder: Any, contract: FeatureContract) -> None:
    """The registry's (guarded) contract must provide every column the encoder expects."""
    missing = sorted(set(encoder.contract.columns) - set(contract.columns))
    if encoder.contract.service_name != contract.service_name or missing:
        raise ArtifactError(
            f"the model expects feature service {encoder.contract.service_name!r} "
            f"(v{encoder.contract.service_version}) but the repo serves {contract.service_name!r} "
            f"(v{contract.service_version}); missing columns: {missing[:8]}"
        )


def point_in_time_features(
    store: Any, contract: FeatureContract, customer_ids: np.ndarray, as_of: datetime
) -> tuple[pd.DataFrame, np.ndarray]:
    """``(frame, found)``: contract columns for ``customer_ids`` at ``as_of``, in input order.

    ``found`` marks customers with at least one feature row inside the TTL windows; the
    others (dropped by the offline store) cannot be embedded and are reported by callers.
    """
    from lookalike.snapshot import build_point_in_time_features

    ids = np.asarray(customer_ids, dtype=np.int64)
    entity_df = pd.DataFrame({JOIN_KEY: ids, "event_timestamp": pd.Timestamp(as_of)})
    if len(ids) == 0:
        return pd.DataFrame({JOIN_KEY: ids, **{c: [] for c in contract.columns}}), np.zeros(0, bool)
    result = build_point_in_time_features(store, contract, entity_df)
    frame = result[0] if isinstance(result, tuple) else getattr(result, "frame", result)
    frame = frame.drop_duplicates(JOIN_KEY, keep="last")
    aligned = pd.DataFrame({JOIN_KEY: ids}).merge(frame, on=JOIN_KEY, how="left")
    columns = [c for c in contract.columns if c in aligned.columns]
    found = aligned[columns].notna().any(axis=1).to_numpy() if columns else np.zeros(len(ids), bool)
    return aligned, found


def embed_frame(encoder: Any, frame: pd.DataFrame, batch_size: int = 16384, desc: str = "embed") -> np.ndarray:
    """Embeddings (n, dim) float32, L2-normalised by the encoder, in batches with progress."""
    from tqdm import tqdm

    n = len(frame)
    if n == 0:
        return np.zeros((0, encoder.embedding_dim), dtype=np.float32)
    parts = []
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=n <= batch_size):
        parts.append(encoder.embed(frame.iloc[start:start + batch_size], batch_size=batch_size))
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
