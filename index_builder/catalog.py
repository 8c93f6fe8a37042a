"""The segment catalog (segment_id, name, kind, ...): display names and kinds for reports,
the index bundle and ``/assign`` responses. Optional: a repo without one gets ids only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

CATALOG_FILE = "segment_catalog.parquet"


def _column_map(catalog: Path | None, column: str) -> dict[str, str]:
    if catalog is None or not Path(catalog).is_file():
        return {}
    table = pq.read_table(catalog).to_pandas()
    if not {"segment_id", column} <= set(table.columns):
        return {}
    values = table[["segment_id", column]].dropna()
    return dict(zip(values["segment_id"].astype(str), values[column].astype(str), strict=True))


def segment_kinds(catalog: Path | None) -> dict[str, str]:
    return _column_map(catalog, "kind")


def segment_names(catalog: Path | None) -> dict[str, str]:
    return _column_map(catalog, "name")


def default_catalog(repo: Path, store: Any) -> Path | None:
    """``<features>/../raw/segment_catalog.parquet`` next to the labels view's source, else
    ``<repo>/data/segment_catalog.parquet``; None when neither exists."""
    from lookalike.contract import find_view_by_role

    view = find_view_by_role(store, "labels")
    path = getattr(view.batch_source, "path", None) if view is not None else None
    if path:
        guess = Path(path).parent.parent / "raw" / CATALOG_FILE
        if guess.is_file():
            return guess
    guess = Path(repo) / "data" / CATALOG_FILE
    return guess if guess.is_file() else None
