"""Sharding the anchor index by anchor range loses nothing: merged partial top-k lists equal
the whole index's top-k, for exact (flat) and IVF indexes (same coarse quantizer per shard)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from index_builder.faiss_backend import IndexParams, build_index, l2_normalise
from index_builder.spark_engine import merge_top_k, shard_index
from lookalike.errors import ConfigError

pytestmark = pytest.mark.unit


def _search_shards(parts: list[bytes], queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple:
    sims, ids = [], []
    for payload in parts:
        index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        if nprobe is not None:
            index.nprobe = nprobe
        s, i = index.search(queries, k)
        sims.append(s)
        ids.append(i)
    return merge_top_k(sims, ids, k)


@pytest.mark.parametrize(("kind", "shards"), [("flat", 3), ("ivf", 4), ("flat", 1)])
def test_sharded_search_equals_whole_index(kind: str, shards: int) -> None:
    rng = np.random.default_rng(3)
    anchors = rng.normal(size=(3000, 16)).astype(np.float32)
    queries = l2_normalise(rng.normal(size=(200, 16)).astype(np.float32))
    built = build_index(anchors, IndexParams(type=kind, nlist=32, nprobe=4, recall_sample=0))
    k = 10
    whole_sims, whole_ids = built.index.search(queries, k)
    sims, ids = _search_shards(shard_index(built.index, shards), queries, k,
                               nprobe=4 if kind == "ivf" else None)
    np.testing.assert_array_equal(ids, whole_ids)
    np.testing.assert_allclose(sims, whole_sims, rtol=0, atol=1e-6)


def test_shards_smaller_than_k_are_padded_and_merged() -> None:
    sims = [np.array([[0.9, -np.inf]], np.float32), np.array([[0.95, 0.1]], np.float32)]
    ids = [np.array([[4, -1]]), np.array([[7, 8]])]
    top_sims, top_ids = merge_top_k(sims, ids, 3)
    assert top_ids.tolist() == [[7, 4, 8]]
    np.testing.assert_allclose(top_sims, [[0.95, 0.9, 0.1]])


def test_hnsw_cannot_be_sharded() -> None:
    built = build_index(np.eye(8, dtype=np.float32), IndexParams(type="hnsw", recall_sample=0))
    with pytest.raises(ConfigError, match="cannot be sharded"):
        shard_index(built.index, 2)
