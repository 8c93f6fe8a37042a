from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from index_builder import faiss_backend
from index_builder.aggregation import AGGREGATIONS
from index_builder.bundle import AssignmentSpec, load_bundle, write_bundle
from lookalike.errors import ArtifactError, ConfigError, DataValidationError

pytestmark = pytest.mark.unit


def clustered(n: int, dim: int = 32, centres: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim))
    return (means[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def brute_force_topk(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    a = data / np.linalg.norm(data, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(q @ a.T), axis=1)[:, :k]


def test_flat_index_matches_brute_force_cosine() -> None:
    data = clustered(500)
    built = faiss_backend.build_index(data, faiss_backend.IndexParams(type="flat"))
    _, ids = faiss_backend.search(built.index, faiss_backend.l2_normalise(data[:50]), 5)
    assert faiss_backend.recall_between(ids, brute_force_topk(data, data[:50], 5)) == 1.0
    assert built.recall_at_k == 1.0 and built.device == "cpu"


@pytest.mark.parametrize("kind,extra", [("ivf", {"nlist": 16, "nprobe": 8}), ("hnsw", {"hnsw_m": 16})])
def test_approximate_indexes_record_recall_against_exact(kind: str, extra: dict) -> None:
    data = clustered(2000)
    built = faiss_backend.build_index(data, faiss_backend.IndexParams(type=kind, recall_sample=200, **extra))
    assert built.recall_k == 10
    assert built.recall_at_k is not None and 0.9 <= built.recall_at_k <= 1.0


def test_ivf_with_one_probe_has_measurably_lower_recall() -> None:
    data = clustered(3000, centres=200, seed=3)
    low = faiss_backend.build_index(data, faiss_backend.IndexParams(type="ivf", nlist=64, nprobe=1, min_recall=0))
    high = faiss_backend.build_index(data, faiss_backend.IndexParams(type="ivf", nlist=64, nprobe=64, min_recall=0))
    assert high.recall_at_k == pytest.approx(1.0)
    assert low.recall_at_k < high.recall_at_k


def test_auto_index_is_exact_for_small_runs_and_tuned_ivf_above_the_threshold(tmp_path) -> None:
    assert faiss_backend.IndexParams().type == "auto"
    small = faiss_backend.build_index(clustered(2000), faiss_backend.IndexParams())
    assert small.index_type == "flat" and small.recall_at_k == 1.0
    data = clustered(4000, centres=40, seed=5)
    large = faiss_backend.build_index(data, faiss_backend.IndexParams(exact_below=3000, recall_sample=300))
    assert large.index_type == "ivf" and large.params["nprobe"] >= 1
    assert (large.params["nlist"], large.params["quantizer"]) == faiss_backend.tuned_ivf(4000)[::2]
    assert large.params["nprobe"] >= faiss_backend.tuned_ivf(4000)[1]
    assert large.recall_k == 10 and large.recall_at_k is not None and large.recall_at_k >= 0.9
    # the measured recall travels into the bundle manifest
    spec = AssignmentSpec(k=10, aggregation="weighted", segments=["a"], thresholds=[0.5],
                          search_params=large.params)
    manifest = write_bundle(tmp_path / "b", large, np.arange(4000), sp.csr_matrix(np.ones((4000, 1))), spec,
                            index_version="v", model_version="1")
    assert manifest["index_type"] == "ivf" and manifest["recall_at_k"] == large.recall_at_k
    assert load_bundle(tmp_path / "b").index.nprobe == large.params["nprobe"]


def test_tuned_ivf_grows_lists_with_the_anchor_count() -> None:
    small, large = faiss_backend.tuned_ivf(100_000), faiss_backend.tuned_ivf(1_000_000)
    assert small[0] < large[0] and small[2] == large[2] == "flat"
    assert all(1 <= nprobe <= nlist for nlist, nprobe, _ in (small, large, faiss_backend.tuned_ivf(10)))


def test_gpu_request_falls_back_to_cpu_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    if faiss_backend.gpu_support()[0]:
        pytest.skip("a GPU is present; the fallback path is exercised on CPU-only machines")
    built = faiss_backend.build_index(clustered(300), faiss_backend.IndexParams(device="gpu"))
    assert built.device == "cpu" and built.fallback_reason
    # and a GPU transfer that blows up mid-build also ends on CPU, not in an exception
    monkeypatch.setattr(faiss_backend, "resolve_device", lambda requested: ("gpu", None))

    def broken(index):  # type: ignore[no-untyped-def]
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(faiss_backend, "_to_gpu", broken)
    built = faiss_backend.build_index(clustered(300), faiss_backend.IndexParams(type="ivf", nlist=4))
    assert built.device == "cpu" and "out of memory" in (built.fallback_reason or "")
    assert built.index.ntotal == 300


def test_search_excluding_self_never_returns_the_query() -> None:
    data = clustered(400)
    built = faiss_backend.build_index(data, faiss_backend.IndexParams())
    rows = np.arange(0, 400, 7)
    sims, ids = faiss_backend.search_excluding_self(built.index, faiss_backend.l2_normalise(data[rows]), rows, 5)
    assert ids.shape == (len(rows), 5)
    assert not (ids == rows[:, None]).any()
    expected = brute_force_topk(data, data[rows], 6)[:, 1:]
    assert faiss_backend.recall_between(ids, expected) > 0.99
    assert np.all(np.diff(sims, axis=1) <= 1e-6)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ConfigError, match="index.type"):
        faiss_backend.IndexParams(type="annoy")
    with pytest.raises(DataValidationError, match="NaN"):
        faiss_backend.build_index(np.full((3, 4), np.nan, np.float32), faiss_backend.IndexParams())
    with pytest.raises(DataValidationError, match="zero anchors"):
        faiss_backend.build_index(np.zeros((0, 4), np.float32), faiss_backend.IndexParams())


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_bundle_round_trip_scores_identically(tmp_path, kind: str) -> None:
    data = clustered(600)
    rng = np.random.default_rng(1)
    labels = sp.csr_matrix((rng.random((600, 6)) < 0.3).astype(np.uint8))
    params = faiss_backend.IndexParams(type=kind, nlist=8, nprobe=4, ef_search=32)
    built = faiss_backend.build_index(data, params)
    spec = AssignmentSpec(k=7, aggregation="weighted", segments=list("abcdef"), thresholds=[0.5] * 6,
                          search_params=built.params)
    ids = np.arange(1000, 1600, dtype=np.int64)
    write_bundle(tmp_path / "b", built, ids, labels, spec, index_version="v1", model_version="3")
    bundle = load_bundle(tmp_path / "b")
    assert bundle.index_version == "v1" and bundle.manifest["index_type"] == kind
    assert bundle.anchor_rows([1005, 99]).tolist() == [5, -1]
    scores = bundle.score(data[:20])
    assert scores.shape == (20, 6) and scores.min() >= 0 and scores.max() <= 1
    before = faiss_backend.search(built.searcher(), faiss_backend.l2_normalise(data[:20]), 7)[1]
    assert np.array_equal(bundle.search(data[:20])[1], before)
    assert set(AGGREGATIONS) >= {bundle.assignment.aggregation}


def test_tampered_bundle_is_refused(tmp_path) -> None:
    data = clustered(50)
    built = faiss_backend.build_index(data, faiss_backend.IndexParams())
    spec = AssignmentSpec(k=3, aggregation="majority", segments=["a"], thresholds=[0.5])
    write_bundle(tmp_path / "b", built, np.arange(50), sp.csr_matrix(np.ones((50, 1))), spec,
                 index_version="v", model_version="1")
    np.save(tmp_path / "b" / "anchor_ids.npy", np.arange(50) + 1)
    with pytest.raises(ArtifactError, match="content hash mismatch"):
        load_bundle(tmp_path / "b")
    with pytest.raises(ArtifactError, match="not found"):
        load_bundle(tmp_path / "missing")


def structureless(n: int, dim: int = 32, seed: int = 7) -> np.ndarray:
    """Uniform directions on the sphere: no clusters for an IVF or a graph to exploit."""
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("kind,extra", [("ivf", {"nlist": 64, "nprobe": 1}), ("hnsw", {"hnsw_m": 4, "ef_search": 4})])
def test_recall_guarantee_on_structureless_vectors_raises_the_knob_or_falls_back(tmp_path, kind: str,
                                                                                 extra: dict) -> None:
    data = structureless(3000)
    params = faiss_backend.IndexParams(type=kind, min_recall=0.95, recall_sample=300, **extra)
    built = faiss_backend.build_index(data, params, recall_k=20)
    trials = built.recall_check["trials"]
    assert trials and trials[0][2] < 0.95  # the starting knob misses on noise
    if built.index_type == "flat":  # fallback: exact search, the reason on record
        assert built.recall_at_k == 1.0 and "fallback" in built.recall_check
    else:
        assert built.recall_at_k >= 0.95 and trials[-1][2] >= 0.95
        knob = "nprobe" if kind == "ivf" else "ef_search"
        assert built.params[knob] == trials[-1][1] > trials[0][1]
    # independent check: the index as built reaches the target on fresh held-out queries
    rows = np.arange(0, 3000, 13)
    _, found = faiss_backend.search_excluding_self(built.searcher(), faiss_backend.l2_normalise(data[rows]), rows, 20)
    expected = brute_force_topk(data, data[rows], 21)[:, 1:]
    assert faiss_backend.recall_between(found, expected) >= 0.9
    spec = AssignmentSpec(k=20, aggregation="weighted", segments=["a"], thresholds=[0.5],
                          search_params=built.params)
    manifest = write_bundle(tmp_path / "b", built, np.arange(3000), sp.csr_matrix(np.ones((3000, 1))), spec,
                            index_version="v", model_version="1")
    assert manifest["recall_at_k"] == built.recall_at_k and manifest["recall_k"] == 20
    assert manifest["recall_check"]["min_recall"] == 0.95 and manifest["recall_check"]["trials"] == trials
    reloaded = load_bundle(tmp_path / "b")
    _, again = reloaded.search(data[rows], 21, exclude_anchor_rows=rows)
    assert faiss_backend.recall_between(again[:, :20], found) > 0.99


def test_recall_guarantee_falls_back_to_exact_when_the_budget_runs_out(caplog: pytest.LogCaptureFixture) -> None:
    data = structureless(2000)
    params = faiss_backend.IndexParams(type="ivf", nlist=64, nprobe=1, min_recall=0.95, tune_seconds=0,
                                       recall_sample=200)
    with caplog.at_level("WARNING"):
        built = faiss_backend.build_index(data, params, recall_k=10)
    assert built.index_type == "flat" and built.recall_at_k == 1.0
    assert "tune_seconds" in built.recall_check["fallback"] and "falling back to exact" in caplog.text
    assert built.recall_check["approximate"]["nprobe"] == 1
    rows = np.arange(0, 2000, 50)
    _, found = faiss_backend.search(built.index, faiss_backend.l2_normalise(data[rows]), 10)
    assert faiss_backend.recall_between(found, brute_force_topk(data, data[rows], 10)) == 1.0


def test_min_recall_zero_only_measures() -> None:
    built = faiss_backend.build_index(structureless(2000), faiss_backend.IndexParams(
        type="ivf", nlist=64, nprobe=1, min_recall=0, recall_sample=200))
    assert built.index_type == "ivf" and built.params["nprobe"] == 1 and built.recall_at_k < 0.95
    with pytest.raises(ConfigError, match="min_recall"):
        faiss_backend.IndexParams(min_recall=1.5)


def test_torch_exact_search_matches_faiss_exact() -> None:
    from index_builder.torch_search import TorchExactIndex

    data = faiss_backend.l2_normalise(clustered(3000))
    searcher = TorchExactIndex(data, device="cpu")
    sims, ids = searcher.search(data[:100], 12)
    ref_sims, ref_ids = faiss_backend.faiss.knn(data[:100], data, 12, metric=faiss_backend.faiss.METRIC_INNER_PRODUCT)
    assert faiss_backend.recall_between(ids, ref_ids) > 0.999
    assert np.allclose(sims, ref_sims, atol=1e-5)


def test_torch_cuda_path_falls_back_to_cpu_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    """FAISS without GPU support + a CUDA torch -> torch exact search; a CUDA failure -> CPU."""
    if faiss_backend.gpu_support()[0]:
        pytest.skip("faiss-gpu present: the torch path is not taken")
    monkeypatch.setattr(faiss_backend, "torch_cuda_support", lambda: (True, "torch CUDA (simulated)"))
    assert faiss_backend.resolve_device("auto")[0] == "torch-cuda"
    assert faiss_backend.resolve_device("cpu")[0] == "cpu"
    from index_builder import torch_search

    real_cls = torch_search.TorchExactIndex

    class Broken(real_cls):  # type: ignore[misc,valid-type]
        """CUDA fails; the CPU exact search (the recall guarantee's reference) still works."""

        def __init__(self, anchors: np.ndarray, device: str = "cuda") -> None:
            if device != "cpu":
                raise RuntimeError("CUDA error: no kernel image is available")
            super().__init__(anchors, device)

    monkeypatch.setattr(torch_search, "TorchExactIndex", Broken)
    data = clustered(800)
    built = faiss_backend.build_index(data, faiss_backend.IndexParams(type="ivf", nlist=8, device="gpu"))
    assert built.device == "cpu" and built.searcher() is built.index
    _, ids = faiss_backend.search(built.searcher(), faiss_backend.l2_normalise(data[:10]), 5)
    assert ids.shape == (10, 5)
    # and when torch works, batch search goes through it (exact); the saved index stays faiss
    monkeypatch.undo()
    monkeypatch.setattr(faiss_backend, "torch_cuda_support", lambda: (True, "torch CUDA (simulated)"))
    monkeypatch.setattr(torch_search, "TorchExactIndex", lambda anchors, device="cuda": real_cls(anchors, device="cpu"))
    built = faiss_backend.build_index(data, faiss_backend.IndexParams(type="ivf", nlist=8, device="auto"))
    assert built.device == "torch-cuda" and isinstance(built.searcher(), real_cls)
    assert isinstance(built.index, faiss_backend.faiss.IndexIVFFlat)
    queries = faiss_backend.l2_normalise(data[:10])
    _, exact = faiss_backend.faiss.knn(queries, faiss_backend.l2_normalise(data), 5,
                                       metric=faiss_backend.faiss.METRIC_INNER_PRODUCT)
    assert faiss_backend.recall_between(faiss_backend.search(built.searcher(), queries, 5)[1], exact) == 1.0


def test_large_ivf_searches_in_list_order_give_the_plain_search_results(monkeypatch: pytest.MonkeyPatch) -> None:
    data = clustered(6000, centres=60, seed=9)
    built = faiss_backend.build_index(data[:3000], faiss_backend.IndexParams(type="ivf", nlist=32, nprobe=4,
                                                                            min_recall=0))
    queries = faiss_backend.l2_normalise(data[3000:])
    monkeypatch.setattr(faiss_backend, "BULK_FROM", 10**9)
    plain = faiss_backend.search(built.index, queries, 15)
    monkeypatch.setattr(faiss_backend, "BULK_FROM", 100)
    ordered = faiss_backend.search(built.index, queries, 15, batch_size=700)
    assert np.array_equal(plain[1], ordered[1]) and np.allclose(plain[0], ordered[0])
