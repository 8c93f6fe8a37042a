"""Population embeddings inside the index bundle: what ``/expand`` ranks.

The weekly job embeds every customer anyway (opt-in anchors for the index, non-opt-in
customers for assignment). Keeping those vectors in the bundle -- three ``.npy`` files,
memory-mapped by the service -- means the service no longer re-embeds the whole population
from online features at start-up (minutes at millions of customers; seconds now), and
``/expand`` ranks exactly the vectors the weekly assignment used.

Files (ids sorted, one row per customer, suppressed customers never included):

- ``population_ids.npy``: int64 customer ids, ascending;
- ``population_embeddings.npy``: float32 (n, dim), L2-normalised;
- ``population_opt_in.npy``: bool, opt-in at the run date.

:func:`write_population` writes them into a bundle directory that is still staged (the
weekly job's private directory, swapped in only after every step succeeded) and re-stamps
the bundle manifest so its content hash covers them. Both weekly engines go through it
(:func:`add_anchors_and_customers`): the local engine hands over its in-memory embeddings,
the Spark engine the Parquet shards its executors wrote, streamed block by block into the
memory-mapped ``.npy`` (``index_builder/spark_engine.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.artifacts import read_manifest, write_manifest
from lookalike.errors import ArtifactError, DataValidationError

IDS_FILE = "population_ids.npy"
EMBEDDINGS_FILE = "population_embeddings.npy"
OPT_IN_FILE = "population_opt_in.npy"
_MANIFEST_OWN_FIELDS = ("kind", "created_at", "content_hash", "files")


@dataclass(frozen=True)
class PopulationEmbeddings:
    ids: np.ndarray  # int64 (n,), ascending
    embeddings: np.ndarray  # float32 (n, dim), L2-normalised; a read-only memory map when loaded
    opt_in: np.ndarray  # bool (n,)
    # (sum of the embeddings (float64, dim), sum of their squared norms), from the manifest:
    # the service's population statistics without a pass over the embeddings at start-up
    sums: tuple[np.ndarray, float] | None = None

    def rows_of(self, customer_ids: Any) -> np.ndarray:
        """Row of each id, ``-1`` where the customer is not in the population."""
        ids = np.asarray(customer_ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        pos = np.clip(np.searchsorted(self.ids, ids), 0, len(self.ids) - 1)
        return np.where(self.ids[pos] == ids, pos, -1)


def add_population(bundle_dir: str | Path, ids: np.ndarray, embeddings: np.ndarray,
                   opt_in: np.ndarray) -> dict[str, Any]:
    """Write the population files into a staged bundle and re-stamp its manifest."""
    ids = np.asarray(ids, dtype=np.int64)
    vectors = np.asarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise DataValidationError(f"population: {len(ids)} ids, embeddings {vectors.shape} differ")
    return write_population(bundle_dir, ids, opt_in, [(ids, vectors)], dim=vectors.shape[1])


def add_anchors_and_customers(bundle_dir: str | Path, anchor_ids: np.ndarray, anchor_embeddings: np.ndarray,
                              customer_ids: np.ndarray,
                              customer_blocks: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """The weekly population: opt-in anchors (in memory) and the scored non-opt-in customers,
    whose embeddings arrive as ``(ids, vectors)`` blocks (one array, or shards streamed from disk)."""
    ids = np.concatenate([np.asarray(anchor_ids, np.int64), np.asarray(customer_ids, np.int64)])
    opt_in = np.concatenate([np.ones(len(anchor_ids), bool), np.zeros(len(customer_ids), bool)])
    blocks = itertools.chain([(np.asarray(anchor_ids, np.int64), anchor_embeddings)], customer_blocks)
    return write_population(bundle_dir, ids, opt_in, blocks, dim=int(np.shape(anchor_embeddings)[1]))


def write_population(bundle_dir: str | Path, ids: np.ndarray, opt_in: np.ndarray,
                     blocks: Iterable[tuple[np.ndarray, np.ndarray]], dim: int) -> dict[str, Any]:
    """Write the population files into a staged bundle and re-stamp its manifest.

    ``ids``/``opt_in`` list every customer (any order); ``blocks`` yield ``(ids, vectors)``
    covering each of them exactly once. The embeddings go block by block into a file-backed
    memory map at their sorted-id rows, L2-normalised row by row, so a caller streaming shards
    never holds the (n, dim) array in memory."""
    from numpy.lib.format import open_memmap

    from index_builder.bundle import BUNDLE_KIND

    bundle_dir = Path(bundle_dir)
    ids = np.asarray(ids, dtype=np.int64)
    flags = np.asarray(opt_in, dtype=bool)
    if len(flags) != len(ids):
        raise DataValidationError(f"population: {len(ids)} ids, {len(flags)} opt-in flags differ")
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if len(ids) > 1 and (np.diff(ids) == 0).any():
        raise DataValidationError("population: duplicate customer ids")
    manifest = read_manifest(bundle_dir, BUNDLE_KIND)
    if manifest.get("dim") is not None and dim != int(manifest["dim"]):
        raise DataValidationError(f"population embeddings have dim {dim}, the index {manifest['dim']}")
    filled = np.zeros(len(ids), dtype=bool)
    staged = bundle_dir / f".{EMBEDDINGS_FILE}.tmp"
    normalised = open_memmap(staged, mode="w+", dtype=np.float32, shape=(len(ids), dim))
    for block_ids, block in blocks:
        block_ids = np.asarray(block_ids, dtype=np.int64)
        vectors = np.asarray(block, dtype=np.float32)
        if vectors.shape != (len(block_ids), dim):
            raise DataValidationError(f"population: a block of {len(block_ids)} ids has embeddings {vectors.shape}, "
                                      f"expected ({len(block_ids)}, {dim})")
        if not len(block_ids):
            continue
        rows = np.clip(np.searchsorted(ids, block_ids), 0, len(ids) - 1)
        if (ids[rows] != block_ids).any():
            raise DataValidationError("population: embeddings for customer ids outside the population")
        if filled[rows].any():
            raise DataValidationError("population: a customer's embedding arrived twice")
        filled[rows] = True
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalised[rows] = vectors / np.maximum(norms, 1e-12)
    if not filled.all():
        raise DataValidationError(f"population: {int((~filled).sum())} customer(s) have no embedding")
    normalised.flush()
    total, squares = embedding_sums(normalised)
    del normalised
    staged.replace(bundle_dir / EMBEDDINGS_FILE)
    np.save(bundle_dir / IDS_FILE, ids)
    np.save(bundle_dir / OPT_IN_FILE, flags[order])
    fields = {k: v for k, v in manifest.items() if k not in _MANIFEST_OWN_FIELDS}
    fields["population"] = {"customers": int(len(ids)), "opt_in": int(flags.sum()), "dim": dim,
                            "files": [IDS_FILE, EMBEDDINGS_FILE, OPT_IN_FILE],
                            "sum": [float(v) for v in total], "sum_squares": squares}
    return write_manifest(bundle_dir, BUNDLE_KIND, record_files=True, **fields)


def embedding_sums(embeddings: np.ndarray, chunk: int = 262_144) -> tuple[np.ndarray, float]:
    """(sum of the rows in float64, sum of their squared norms), one chunked pass."""
    total = np.zeros(embeddings.shape[1], dtype=np.float64)
    squares = 0.0
    for start in range(0, len(embeddings), chunk):
        block = np.asarray(embeddings[start:start + chunk], dtype=np.float32)
        total += block.sum(axis=0, dtype=np.float64)
        squares += float(np.einsum("ij,ij->", block, block, dtype=np.float64))
    return total, squares


def load_population(bundle_dir: str | Path) -> PopulationEmbeddings | None:
    """The bundle's population (embeddings memory-mapped), or ``None`` when it has none."""
    bundle_dir = Path(bundle_dir)
    paths = [bundle_dir / name for name in (IDS_FILE, EMBEDDINGS_FILE, OPT_IN_FILE)]
    if not any(p.exists() for p in paths):
        return None
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ArtifactError(f"index bundle {bundle_dir} has an incomplete population: missing {missing}")
    ids = np.load(paths[0])
    embeddings = np.load(paths[1], mmap_mode="r")
    opt_in = np.load(paths[2])
    if embeddings.ndim != 2 or not len(ids) == len(embeddings) == len(opt_in):
        raise ArtifactError(f"index bundle {bundle_dir}: population files disagree in length")
    from index_builder.bundle import BUNDLE_KIND

    recorded = read_manifest(bundle_dir, BUNDLE_KIND).get("population") or {}
    sums = None
    if "sum" in recorded and len(recorded["sum"]) == embeddings.shape[1]:  # absent in older bundles
        if int(recorded.get("customers", -1)) != len(ids):
            raise ArtifactError(f"index bundle {bundle_dir}: manifest counts {recorded.get('customers')} "
                                f"population customers, the files {len(ids)}")
        sums = (np.asarray(recorded["sum"], dtype=np.float64), float(recorded["sum_squares"]))
    return PopulationEmbeddings(ids, embeddings, opt_in, sums)
