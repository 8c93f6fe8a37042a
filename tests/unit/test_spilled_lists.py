"""Bulk search over spilled IVF lists: exact at full spill, tuned by the recall guarantee,
used by bundles for large query batches only."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from index_builder import faiss_backend
from index_builder.bundle import AssignmentSpec, load_bundle, write_bundle
from index_builder.spilled_lists import BULK_FROM, ivf_centroids, spill_lists

pytestmark = pytest.mark.unit


def clustered(n: int, dim: int = 16, centres: int = 30, seed: int = 0) -> np.ndarray:
    """``n`` points of one fixed mixture (``seed`` draws the points, not the centres)."""
    means = np.random.default_rng(0).normal(size=(centres, dim))
    rng = np.random.default_rng(seed)
    return faiss_backend.l2_normalise(means[rng.integers(0, centres, n)] + 0.6 * rng.normal(size=(n, dim)))


def exact(anchors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return faiss_backend.faiss.knn(queries, anchors, k, metric=faiss_backend.faiss.METRIC_INNER_PRODUCT)[1]


def test_full_spill_is_exact_and_less_spill_loses_recall() -> None:
    anchors, queries = clustered(3000), clustered(500, seed=1)
    centroids = ivf_centroids(faiss_backend.build_index(
        anchors, faiss_backend.IndexParams(type="ivf", nlist=32, recall_sample=0)).index)
    truth = exact(anchors, queries, 25)
    full = spill_lists(anchors, centroids, 32)
    sims, ids = full.search(queries, 25)
    assert full.rows.size == 32 * 3000 and faiss_backend.recall_between(ids, truth) == 1.0
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # best first, like a FAISS search
    one = spill_lists(anchors, centroids, 1)
    assert one.rows.size == 3000 and np.array_equal(np.sort(one.rows), np.arange(3000))  # each anchor once
    assert faiss_backend.recall_between(one.search(queries, 25)[1], truth) < 0.95


def test_lists_shorter_than_k_pad_with_minus_one() -> None:
    anchors = clustered(40)
    lists = spill_lists(anchors, anchors[:8], 1)
    sims, ids = lists.search(clustered(50, seed=2), 30)
    padded = ids < 0
    assert padded.any() and np.isneginf(sims[padded]).all()
    assert ids.max() < 40 and all(len(set(row[row >= 0])) == (row >= 0).sum() for row in ids)


def test_recall_guarantee_tunes_spill_on_structureless_vectors() -> None:
    data = np.random.default_rng(7).normal(size=(3000, 24)).astype(np.float32)
    params = faiss_backend.IndexParams(type="ivf", nlist=48, nprobe=2, spill=1, recall_sample=300, min_recall=0.9)
    built = faiss_backend.build_index(data, params, recall_k=15)
    bulk = built.recall_check["bulk"]
    assert bulk["trials"][0][:2] == ["spill", 1] and bulk["trials"][0][2] < 0.9  # noise defeats one list
    assert bulk["recall_at_k"] >= 0.9 and built.params["spill"] == bulk["trials"][-1][1] > 1
    assert built.bulk is not None and built.bulk.spill == built.params["spill"]
    # fresh queries (not the tuning sample) reach the target too
    queries = faiss_backend.l2_normalise(np.random.default_rng(8).normal(size=(400, 24)).astype(np.float32))
    _, found = built.bulk.search(queries, 15)
    assert faiss_backend.recall_between(found, exact(faiss_backend.l2_normalise(data), queries, 15)) >= 0.85


def test_spill_budget_exhausted_keeps_the_ivf_scan(caplog: pytest.LogCaptureFixture) -> None:
    data = np.random.default_rng(3).normal(size=(2000, 24)).astype(np.float32)
    params = faiss_backend.IndexParams(type="ivf", nlist=32, nprobe=32, spill=1, recall_sample=200, tune_seconds=0)
    with caplog.at_level("WARNING"):
        built = faiss_backend.build_index(data, params, recall_k=10)
    assert built.index_type == "ivf" and built.bulk is None and "spill" not in built.params
    assert "tune_seconds" in built.recall_check["bulk"]["fallback"] and "bulk" in caplog.text


def test_bundle_searches_large_batches_through_spilled_lists(tmp_path) -> None:
    anchors = clustered(4000, seed=4)
    built = faiss_backend.build_index(anchors, faiss_backend.IndexParams(type="ivf", nlist=40, recall_sample=300),
                                      recall_k=10)
    assert built.params["spill"] >= 1
    spec = AssignmentSpec(k=10, aggregation="weighted", segments=["a"], thresholds=[0.5], search_params=built.params)
    write_bundle(tmp_path / "b", built, np.arange(4000), sp.csr_matrix(np.ones((4000, 1))), spec,
                 index_version="v", model_version="1")
    bundle = load_bundle(tmp_path / "b")
    small = clustered(100, seed=5)
    assert np.array_equal(bundle.search(small)[1], faiss_backend.search(bundle.index, small, 10)[1])
    assert "bulk_lists" not in vars(bundle)  # serving-sized calls never build the spilled lists
    queries = clustered(BULK_FROM, seed=6)
    sims, ids = bundle.search(queries)
    assert bundle.bulk_lists is not None and bundle.bulk_lists.spill == built.params["spill"]
    assert np.array_equal(ids, bundle.bulk_lists.search(queries, 10)[1])
    sample = np.arange(0, BULK_FROM, 40)
    assert faiss_backend.recall_between(ids[sample], exact(anchors, queries[sample], 10)) >= 0.93
    rows = np.arange(BULK_FROM) % 4000  # evaluation's self-excluding search takes the same path
    _, own = bundle.search(anchors[rows], exclude_anchor_rows=rows)
    assert not (own == rows[:, None]).any()


def test_search_recall_is_measured_on_the_scored_customers(tmp_path) -> None:
    """The weekly manifest's check: the path the customers actually took, against exact search."""
    anchors = clustered(4000, seed=4)
    built = faiss_backend.build_index(anchors, faiss_backend.IndexParams(type="ivf", nlist=40, recall_sample=300),
                                      recall_k=10)
    spec = AssignmentSpec(k=10, aggregation="weighted", segments=["a"], thresholds=[0.5], search_params=built.params)
    write_bundle(tmp_path / "ivf", built, np.arange(4000), sp.csr_matrix(np.ones((4000, 1))), spec,
                 index_version="v", model_version="1")
    bundle = load_bundle(tmp_path / "ivf")
    customers = clustered(BULK_FROM, seed=7)
    checked = bundle.search_recall(customers, sample=500)
    assert checked is not None and checked["path"] == "spilled lists" and checked["queries"] == 500
    assert checked["min_recall"] == 0.95 and 0.9 <= checked["recall_at_k"] <= 1.0
    assert bundle.search_recall(customers[:300])["path"] == "index"  # type: ignore[index]
    # customers unlike the anchors: the same index misses them, and the check says so
    far = faiss_backend.l2_normalise(np.random.default_rng(9).normal(size=(BULK_FROM, 16)))
    assert bundle.search_recall(far, sample=500)["recall_at_k"] < 0.9  # type: ignore[index]
    exact = faiss_backend.build_index(anchors, faiss_backend.IndexParams(type="flat"))
    write_bundle(tmp_path / "flat", exact, np.arange(4000), sp.csr_matrix(np.ones((4000, 1))), spec,
                 index_version="v", model_version="1")
    assert load_bundle(tmp_path / "flat").search_recall(customers) is None
