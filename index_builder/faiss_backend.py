"""FAISS index construction and search for cosine similarity, CPU or GPU.

Vectors are L2-normalised, so inner product equals cosine. Index types:

- ``auto`` (the default): exact ``flat`` below ``exact_below`` anchors (small weekly runs and
  tests stay exact and instant), the tuned ``ivf`` above it (see :func:`tuned_ivf`, measured
  by ``bench/bench_faiss.py`` and ``bench/bench_weekly.py``);
- ``flat``: exact ``IndexFlatIP`` (maximum recall, what the thesis used);
- ``ivf``: ``IndexIVFFlat`` (``nlist`` inverted lists, ``nprobe`` probed at search time);
- ``hnsw``: ``IndexHNSWFlat`` (graph with ``hnsw_m`` links, ``ef_search`` at search time).

Recall guarantee: an approximate index is checked against exact search at build time on a
held-out sample of anchors used as queries (each query's own row excluded from both
answers). While recall@k is below ``min_recall`` the search knob (IVF ``nprobe``, HNSW
``efSearch``) is raised; when the knob is exhausted or ``tune_seconds`` runs out the
builder falls back to exact search with a warning. Every trial, the chosen knob and the
measured recall go into the bundle manifest.

Bulk searches (the weekly job's millions of queries) of an IVF index go through
:mod:`index_builder.spilled_lists`: each anchor stored in its ``spill`` nearest lists, one
BLAS search per list. ``spill`` is tuned by the same guarantee, on the same held-out
anchors; when its tuning runs out of time, bulk searches use the IVF scan instead.

Devices: FAISS GPU when faiss was built with GPU support and a device is present; else,
when torch sees CUDA, batch searches run as exact torch matmul + top-k on the GPU
(:mod:`index_builder.torch_search`; the saved index stays the CPU one); else CPU. Anything
short of that (CPU-only wheel, no device, a failed transfer) falls back with a log line,
never an exception, so the same config runs everywhere.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import faiss
import numpy as np

from index_builder.spilled_lists import BULK_FROM, SpilledLists, ivf_centroids, spill_lists
from lookalike.config import Fraction, NonNegativeFloat, NonNegativeInt, PositiveInt, stage_config
from lookalike.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

IndexType = Literal["auto", "flat", "ivf", "hnsw"]
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")
QUANTIZERS = ("auto", "flat", "hnsw")
DEVICES = ("auto", "cpu", "gpu")


@stage_config
class IndexParams:
    """How the anchor index is built and searched."""

    type: str = "auto"
    # auto: exact flat index below this many anchors, the tuned IVF from this size up
    exact_below: NonNegativeInt = 50_000
    # IVF: nlist=0 / nprobe=0 take the tuned values for the anchor count (tuned_ivf)
    nlist: NonNegativeInt = 0
    nprobe: NonNegativeInt = 0
    # IVF coarse quantizer: flat (exact), hnsw (graph; cheaper with many lists/queries),
    # auto (hnsw from 4096 lists up)
    quantizer: str = "auto"
    # IVF k-means training points: 0 = min(n, 32 * nlist, 65536) (more barely moves recall, costs time)
    train_sample: NonNegativeInt = 0
    kmeans_iterations: PositiveInt = 10
    # HNSW: links per node, and candidate-list sizes at build and search time.
    hnsw_m: PositiveInt = 32
    ef_construction: PositiveInt = 80
    ef_search: PositiveInt = 64
    # auto: GPU when faiss has GPU support and a device is present; cpu: never; gpu: prefer.
    device: str = "auto"
    # queries used to measure recall@k against exact search for approximate indexes
    recall_sample: NonNegativeInt = 1000
    # recall@k (k = the assignment k) the index must reach against exact search; the search
    # knob is raised until it does, else exact search is used. 0 = measure only.
    min_recall: Fraction = 0.95
    # wall-clock budget for raising the knob; when it runs out: exact search, with a warning
    tune_seconds: NonNegativeFloat = 120.0
    threads: NonNegativeInt = 0  # 0 = faiss default (all cores)
    seed: int = 1234
    # HNSW coarse quantizer's efSearch = max(nprobe, this); 0 = the former max(64, 2 * nprobe).
    # On 2M weekly queries the quantizer pass cost about as much as the list scan: 24 measured
    # 157 s / recall@40 0.989 (the guarantee raised nprobe to 36) vs 224 s / 0.957 with the
    # former rule (bench/README.md, issue #11).
    quantizer_ef_search: NonNegativeInt = 24
    # IVF bulk searches (index_builder.spilled_lists): lists each anchor is stored in; 0 = start
    # at the guaranteed nprobe. Raised by the recall guarantee like nprobe.
    spill: NonNegativeInt = 0

    def __post_init__(self) -> None:
        if self.type not in INDEX_TYPES:
            raise ConfigError(f"index.type must be one of {INDEX_TYPES}, got {self.type!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"index.device must be one of {DEVICES}, got {self.device!r}")
        if self.quantizer not in QUANTIZERS:
            raise ConfigError(f"index.quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")

    def resolved_type(self, n: int) -> str:
        """The concrete index type for ``n`` anchors (``auto`` picks flat or ivf)."""
        if self.type != "auto":
            return self.type
        return "flat" if n < self.exact_below else "ivf"


@dataclass
class BuiltIndex:
    """A CPU index ready to save, plus where/how it was built and its measured recall."""

    index: Any
    index_type: str
    device: str
    dim: int
    ntotal: int
    build_seconds: float
    recall_at_k: float | None = None
    recall_k: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    fallback_reason: str | None = None
    search_index: Any = None  # GPU copy when built on GPU; else the CPU index
    # the recall guarantee: target, trials [(knob, value, recall)], exact fallback reason
    recall_check: dict[str, Any] = field(default_factory=dict)
    # IVF only: the anchors in spilled lists for bulk searches, as tuned by the guarantee
    bulk: SpilledLists | None = None

    def searcher(self) -> Any:
        return self.search_index if self.search_index is not None else self.index


def gpu_support() -> tuple[bool, str]:
    """Whether a GPU can be used, and why not when it cannot."""
    if not hasattr(faiss, "StandardGpuResources"):
        return False, "faiss was built without GPU support (faiss-cpu wheel)"
    try:
        n = faiss.get_num_gpus()
    except Exception as exc:  # noqa: BLE001 - driver problems surface as arbitrary errors
        return False, f"faiss.get_num_gpus() failed: {exc}"
    if n <= 0:
        return False, "no GPU device visible to faiss"
    return True, f"{n} GPU(s)"


def torch_cuda_support() -> tuple[bool, str]:
    """Whether torch can run the exact GPU search, and why not when it cannot."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a project dependency
        return False, "torch is not installed"
    try:
        if torch.cuda.is_available():
            return True, f"torch CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s)"
    except Exception as exc:  # noqa: BLE001 - broken drivers surface as arbitrary errors
        return False, f"torch.cuda.is_available() failed: {exc}"
    return False, "torch sees no CUDA device"


def resolve_device(requested: str) -> tuple[str, str | None]:
    """``(device, fallback_reason)`` for ``requested`` (auto/cpu/gpu).

    ``gpu``: FAISS GPU; ``torch-cuda``: CPU index, exact batch search with torch on the GPU
    (FAISS without GPU support, e.g. faiss-cpu on a CUDA machine); ``cpu``.
    """
    if requested == "cpu":
        return "cpu", None
    ok, why = gpu_support()
    if ok:
        return "gpu", None
    torch_ok, torch_why = torch_cuda_support()
    if torch_ok:
        return "torch-cuda", f"{why}; exact search with {torch_why}"
    reason = f"{why}; {torch_why}"
    if requested == "gpu":
        log.warning("GPU requested for FAISS but unavailable (%s); falling back to CPU", reason)
    return "cpu", reason


def set_threads(threads: int) -> None:
    if threads > 0:
        faiss.omp_set_num_threads(threads)


def as_search_matrix(vectors: np.ndarray, name: str = "vectors") -> np.ndarray:
    """Validate and convert to the contiguous float32 matrix FAISS expects."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise DataValidationError(f"{name} must be a 2-D matrix, got shape {array.shape}")
    if array.shape[0] and not np.isfinite(array).all():
        raise DataValidationError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(array, dtype=np.float32)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    out = as_search_matrix(vectors).copy()
    faiss.normalize_L2(out)
    return out


def default_nlist(n: int) -> int:
    return int(max(1, min(n // 39, round(4 * np.sqrt(max(n, 1))))))


# Tuned on 2 CPU cores (bench/README.md): up to ~300k anchors, lists of ~200 vectors probed
# 4 at a time keep recall@10 >= 0.99 with the k-means still cheap. From a million anchors
# the weekly job's bulk search decides: spilled lists are searched by matrix products, which
# favour fewer, longer lists (~1,000 anchors) behind a flat quantizer. Lists of ~60 behind an
# HNSW quantizer were faster for FAISS's own per-query scan, not for this (2026-11-27).
LARGE_IVF_FROM = 300_000


# k-means cost is sample x nlist x dim per iteration; past ~64k points the centroids barely
# improve recall at the tuned nprobe while training takes tens of seconds on 2 cores
MAX_AUTO_TRAIN_SAMPLE = 65_536


def _power_of_two(value: float) -> int:
    return int(2 ** max(0, round(np.log2(max(value, 1.0)))))


def tuned_ivf(n: int) -> tuple[int, int, str]:
    """``(nlist, nprobe, quantizer)`` measured to be fastest at the recall targets for ``n``."""
    if n < LARGE_IVF_FROM:
        nlist = max(1, min(_power_of_two(n / 200), 2048))
        return nlist, min(4, nlist), "flat"
    return min(_power_of_two(n / 1000), 16384), 4, "flat"


def _ivf_settings(params: IndexParams, n: int) -> tuple[int, int, str]:
    nlist, nprobe, quantizer = tuned_ivf(n)
    if params.nlist:
        nlist = params.nlist
    nlist = max(1, min(nlist, n))
    if params.nprobe:
        nprobe = params.nprobe
    if params.quantizer != "auto":
        quantizer = params.quantizer
    elif params.nlist:
        quantizer = "hnsw" if nlist >= 4096 else "flat"
    return nlist, min(nprobe, nlist), quantizer


def _make_cpu_index(dim: int, params: IndexParams, n: int) -> tuple[Any, dict[str, Any]]:
    kind = params.resolved_type(n)
    if kind == "flat":
        return faiss.IndexFlatIP(dim), {}
    if kind == "ivf":
        nlist, nprobe, quantizer_kind = _ivf_settings(params, n)
        quantizer: Any = faiss.IndexFlatIP(dim)
        if quantizer_kind == "hnsw":
            quantizer = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            quantizer.hnsw.efConstruction = 40
            quantizer.hnsw.efSearch = quantizer_ef(params, nprobe)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = params.seed
        index.cp.niter = params.kmeans_iterations
        # the sample size is chosen by _training_sample; stop faiss from subsampling again
        index.cp.max_points_per_centroid = max(1, n // nlist + 1)
        index.nprobe = nprobe
        info: dict[str, Any] = {"nlist": nlist, "nprobe": nprobe, "quantizer": quantizer_kind}
        if quantizer_kind == "hnsw":
            info["quantizer_ef_search"] = quantizer.hnsw.efSearch
        return index, info
    graph: Any = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = params.ef_construction
    graph.hnsw.efSearch = params.ef_search
    return graph, {"hnsw_m": params.hnsw_m, "ef_construction": params.ef_construction,
                   "ef_search": params.ef_search}


def _training_sample(data: np.ndarray, params: IndexParams, nlist: int) -> np.ndarray:
    size = params.train_sample or min(32 * nlist, MAX_AUTO_TRAIN_SAMPLE)
    if size >= len(data):
        return data
    rows = np.random.default_rng(params.seed).choice(len(data), size=size, replace=False)
    return data[np.sort(rows)]


def _to_gpu(index: Any) -> Any:
    resources = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(resources, 0, index)


def build_index(vectors: np.ndarray, params: IndexParams, recall_k: int = 10) -> BuiltIndex:
    """Build a cosine index over ``vectors`` (L2-normalised here); guarantee its recall@k."""
    data = l2_normalise(vectors)
    n, dim = data.shape
    if n == 0:
        raise DataValidationError("cannot build an index over zero anchors")
    set_threads(params.threads)
    device, fallback = resolve_device(params.device)
    kind = params.resolved_type(n)
    start = time.perf_counter()
    cpu_index, info = _make_cpu_index(dim, params, n)
    search_index = None
    if device == "gpu" and kind != "hnsw":  # faiss has no GPU HNSW; CPU graph instead
        try:
            gpu_index = _to_gpu(cpu_index)
            if kind == "ivf":
                gpu_index.train(_training_sample(data, params, int(cpu_index.nlist)))
            gpu_index.add(data)
            cpu_index = faiss.index_gpu_to_cpu(gpu_index)
            search_index = gpu_index
        except Exception as exc:  # noqa: BLE001 - CUDA errors must not abort a weekly run
            log.warning("FAISS GPU build failed (%s); falling back to CPU", exc)
            device, fallback, search_index = "cpu", f"GPU build failed: {exc}", None
            cpu_index, info = _make_cpu_index(dim, params, n)
    elif device == "gpu":
        device, fallback = "cpu", "hnsw has no GPU implementation in faiss"
    if search_index is None:
        if kind == "ivf":
            cpu_index.train(_training_sample(data, params, int(cpu_index.nlist)))
        cpu_index.add(data)
    built = BuiltIndex(
        index=cpu_index, index_type=kind, device=device, dim=dim, ntotal=n,
        build_seconds=time.perf_counter() - start, params=info, fallback_reason=fallback,
        search_index=search_index,
    )
    if params.type == "auto":
        built.params["selected_by"] = f"auto (exact below {params.exact_below} anchors)"
    if kind != "flat" and params.recall_sample > 0:
        guarantee_recall(built, data, recall_k, params)
    elif kind == "flat":
        built.recall_at_k, built.recall_k = 1.0, recall_k
    if device == "torch-cuda":
        built.search_index = _torch_searcher(data)
        if built.search_index is None:
            built.device = "cpu"
    return built


def _torch_searcher(data: np.ndarray) -> Any:
    from index_builder.torch_search import TorchExactIndex

    try:
        return TorchExactIndex(data)
    except Exception as exc:  # noqa: BLE001 - CUDA errors must not abort a weekly run
        log.warning("torch CUDA exact search unavailable (%s); searching on CPU", exc)
        return None


def _knob(built: BuiltIndex) -> tuple[str, int, int] | None:
    """(name, current value, largest useful value) of the index's recall/speed knob."""
    if built.index_type == "ivf":
        nlist = int(built.params["nlist"])
        return "nprobe", int(built.params["nprobe"]), nlist
    if built.index_type == "hnsw":
        return "ef_search", int(built.params["ef_search"]), max(built.ntotal, 1)
    return None


def quantizer_ef(params: IndexParams, nprobe: int) -> int:
    """efSearch of an HNSW coarse quantizer probing ``nprobe`` lists (never below nprobe)."""
    return max(nprobe, params.quantizer_ef_search) if params.quantizer_ef_search else max(64, 2 * nprobe)


def _apply_knob(built: BuiltIndex, name: str, value: int, params: IndexParams) -> None:
    built.params[name] = value
    if name == "nprobe" and built.params.get("quantizer") == "hnsw":
        built.params["quantizer_ef_search"] = quantizer_ef(params, value)
    set_search_params(built.index, built.params)
    if built.search_index is not None and built.search_index is not built.index:
        try:
            faiss.GpuParameterSpace().set_index_parameter(built.search_index, name.replace("_s", "S"), value)
        except Exception as exc:  # noqa: BLE001 - GPU parameter names differ by index type
            log.warning("could not set %s=%d on the GPU index (%s)", name, value, exc)


def held_out_truth(data: np.ndarray, k: int, sample: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, their exact top-k among the other anchors): the recall reference."""
    n = data.shape[0]
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    _, truth = search_excluding_self(exact_search(data), data[rows], rows, k)
    return rows, truth


def exact_search(data: np.ndarray) -> Any:
    """Brute-force inner product over ``data`` with the index ``search`` signature.

    torch's matrix product and top-k on the CPU: the 1,000 held-out anchors against 1M took
    3.0 s, ``faiss.knn`` 8.3 s and ``IndexFlatIP`` 12.2 s (2 cores, 2026-11-27).
    """
    from index_builder.torch_search import TorchExactIndex

    return TorchExactIndex(data, device="cpu")


def guarantee_recall(built: BuiltIndex, data: np.ndarray, k: int, params: IndexParams) -> None:
    """Measure recall@k on held-out anchors; raise the knob until ``min_recall`` holds.

    Falls back to an exact flat index (with a warning) when the knob reaches its limit or
    ``params.tune_seconds`` runs out first. Updates ``built`` in place.
    """
    k = max(1, min(k, built.ntotal - 1))
    started = time.perf_counter()
    rows, truth = held_out_truth(data, k, params.recall_sample, params.seed)
    trials: list[list[Any]] = []
    knob = _knob(built)
    built.recall_k = k
    built.recall_check = {"min_recall": params.min_recall, "queries": int(len(rows)), "trials": trials}
    while True:
        _, found = search_excluding_self(built.searcher(), data[rows], rows, k)
        recall = recall_between(found, truth)
        built.recall_at_k = recall
        if knob is not None:
            trials.append([knob[0], knob[1], round(recall, 5)])
        if recall >= params.min_recall or knob is None:
            break
        name, value, limit = knob
        spent = time.perf_counter() - started
        if value >= limit or spent > params.tune_seconds:
            why = (f"{name}={value} is already the largest useful value" if value >= limit
                   else f"recall tuning exceeded index.tune_seconds={params.tune_seconds:g}")
            _fall_back_to_exact(built, data, f"recall@{k} {recall:.4f} < {params.min_recall} ({why})")
            break
        knob = (name, min(limit, max(value + 1, int(value * 1.5))), limit)
        _apply_knob(built, name, knob[1], params)
    if built.index_type == "ivf" and built.device == "cpu":
        _guarantee_bulk_recall(built, data, rows, truth, params, started)
    built.recall_check["seconds"] = round(time.perf_counter() - started, 3)
    log.info("%s index %s recall@%d vs exact on %d held-out anchors: %.4f (target %.2f)", built.index_type,
             {key: v for key, v in built.params.items() if key != "selected_by"}, k, len(rows),
             built.recall_at_k, params.min_recall)


def _guarantee_bulk_recall(built: BuiltIndex, data: np.ndarray, rows: np.ndarray, truth: np.ndarray,
                           params: IndexParams, started: float) -> None:
    """Tune ``spill`` for bulk searches on the same held-out anchors as ``nprobe``.

    ``spill = nlist`` would be exact but holds every anchor ``nlist`` times; when the
    budget runs out first, bulk searches keep FAISS's own IVF scan (guaranteed above).
    """
    k = truth.shape[1]
    nlist = int(built.params["nlist"])
    spill = min(nlist, params.spill or int(built.params["nprobe"]))
    centroids = ivf_centroids(built.index)
    trials: list[list[Any]] = []
    built.recall_check["bulk"] = {"trials": trials}
    while True:
        lists = spill_lists(data, centroids, spill)
        _, found = search_excluding_self(lists, data[rows], rows, k)
        recall = recall_between(found, truth)
        trials.append(["spill", spill, round(recall, 5)])
        if recall >= params.min_recall or spill >= nlist:
            built.bulk = lists
            built.params["spill"] = spill
            built.recall_check["bulk"].update(recall_at_k=recall, mean_list_length=round(lists.mean_list_length, 1))
            return
        if time.perf_counter() - started > params.tune_seconds:
            why = f"bulk recall tuning exceeded index.tune_seconds={params.tune_seconds:g}; bulk searches scan the IVF"
            log.warning("index recall guarantee: %s", why)
            built.recall_check["bulk"]["fallback"] = why
            return
        spill = min(nlist, max(spill + 1, int(spill * 1.5)))


def _fall_back_to_exact(built: BuiltIndex, data: np.ndarray, reason: str) -> None:
    log.warning("index recall guarantee: %s; falling back to exact search", reason)
    exact = faiss.IndexFlatIP(data.shape[1])
    exact.add(data)
    built.recall_check.update(fallback=reason, approximate={"type": built.index_type, **built.params})
    built.index, built.search_index, built.index_type = exact, None, "flat"
    built.params = {"selected_by": f"exact fallback: {reason}"}
    built.recall_at_k = 1.0
    if built.device == "gpu":
        built.device = "cpu"


def measure_recall(index: Any, data: np.ndarray, k: int, sample: int, seed: int = 0) -> float:
    """Mean recall@k of ``index`` against exact inner-product search, on sampled rows."""
    n = data.shape[0]
    k = min(k, n)
    rng = np.random.default_rng(seed)
    rows = rng.choice(n, size=min(sample, n), replace=False)
    queries = data[rows]
    _, approx = index.search(queries, k)
    _, truth = faiss.knn(queries, data, k, metric=faiss.METRIC_INNER_PRODUCT)
    return recall_between(approx, truth)


def recall_between(approx: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` ids found in the same row of ``approx``."""
    if truth.size == 0:
        return 1.0
    hits = 0
    for found, expected in zip(approx, truth, strict=True):
        hits += len(np.intersect1d(found[found >= 0], expected[expected >= 0]))
    return hits / float(truth.shape[0] * truth.shape[1])


def search(index: Any, queries: np.ndarray, k: int, batch_size: int = 65536,
           progress: bool = False, bulk: SpilledLists | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (similarities, row ids) for L2-normalised ``queries``, in batches.

    From ``BULK_FROM`` queries a CPU IVF index is searched through ``bulk`` (its spilled
    lists, tuned by the recall guarantee) when given. Without them, large IVF searches are
    ordered by inverted list: the coarse quantizer assigns every query once, queries are
    sorted by their nearest list and scanned with ``search_preassigned``, so consecutive
    queries read the same lists while they are still in cache. Same results as a plain search.
    """
    data = as_search_matrix(queries, "queries")
    n = data.shape[0]
    ivf = _cpu_ivf(index)
    if bulk is not None and ivf is not None and n >= BULK_FROM:
        return bulk.search(data, k, progress=progress)
    sims = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    order = None
    if ivf is not None and n >= BULK_FROM:
        coarse_sims, coarse_ids = ivf.quantizer.search(data, ivf.nprobe)
        order = np.argsort(coarse_ids[:, 0], kind="stable")
        data, coarse_sims, coarse_ids = data[order], coarse_sims[order], coarse_ids[order]
    starts = range(0, n, batch_size)
    if progress and n > batch_size:
        from tqdm import tqdm

        starts = tqdm(starts, desc="faiss search", unit="batch")
    for start in starts:
        stop = min(start + batch_size, n)
        if order is not None and ivf is not None:
            sims[start:stop], ids[start:stop] = ivf.search_preassigned(
                data[start:stop], k, coarse_ids[start:stop], coarse_sims[start:stop])
        else:
            sims[start:stop], ids[start:stop] = index.search(data[start:stop], k)
    if order is not None:
        restored_sims, restored_ids = np.empty_like(sims), np.empty_like(ids)
        restored_sims[order], restored_ids[order] = sims, ids
        return restored_sims, restored_ids
    return sims, ids


def _cpu_ivf(index: Any) -> Any:
    """The index itself when it is a plain CPU IVF index (list-ordered search applies)."""
    return index if isinstance(index, faiss.IndexIVF) else None


def search_excluding_self(index: Any, queries: np.ndarray, query_rows: np.ndarray, k: int,
                          batch_size: int = 65536, bulk: SpilledLists | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` neighbours of anchors that are themselves in the index, minus themselves.

    Searches ``k + 1`` and drops the query's own row (``query_rows[i]``); when the self
    match is not among the results (ties, approximate search) the last neighbour is dropped.
    ``index`` may also be :class:`SpilledLists` (the recall guarantee's bulk trials).
    """
    sims, ids = search(index, queries, k + 1, batch_size, bulk=bulk)
    own = np.asarray(query_rows, dtype=np.int64)[:, None]
    is_self = ids == own
    # keep the first k non-self columns per row
    keep = ~is_self
    no_self = keep.all(axis=1)
    keep[no_self, k] = False
    out_sims = sims[keep].reshape(len(ids), k)
    out_ids = ids[keep].reshape(len(ids), k)
    return out_sims, out_ids


def write_index(index: Any, path: str) -> None:
    faiss.write_index(index, path)


def read_index(path: str, device: str = "cpu") -> tuple[Any, str]:
    """Read an index saved with :func:`write_index`; move it to GPU if asked and possible.

    ``torch-cuda`` (FAISS without GPU support, CUDA torch) serves the index's own vectors
    with exact torch search on the GPU: only for bulk batch search, not for serving.
    """
    index = faiss.read_index(path)
    resolved, _ = resolve_device(device)
    if resolved == "gpu" and not isinstance(index, faiss.IndexHNSWFlat):
        try:
            return _to_gpu(index), "gpu"
        except Exception as exc:  # noqa: BLE001
            log.warning("could not move index to GPU (%s); searching on CPU", exc)
    if resolved == "torch-cuda":
        searcher = _torch_searcher(stored_vectors(index))
        if searcher is not None:
            return searcher, "torch-cuda"
    return index, "cpu"


def stored_vectors(index: Any) -> np.ndarray:
    """All vectors of a flat, IVF-flat or HNSW-flat index, in id order."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
    return np.asarray(index.reconstruct_n(0, index.ntotal), dtype=np.float32)


def set_search_params(index: Any, params: dict[str, Any]) -> None:
    """Re-apply search-time knobs (nprobe, efSearch) after reading an index from disk."""
    if "nprobe" in params and hasattr(index, "nprobe"):
        index.nprobe = int(params["nprobe"])
    if "ef_search" in params and hasattr(index, "hnsw"):
        index.hnsw.efSearch = int(params["ef_search"])
    if "quantizer_ef_search" in params and hasattr(index, "quantizer"):
        quantizer = faiss.downcast_index(index.quantizer)
        if hasattr(quantizer, "hnsw"):
            quantizer.hnsw.efSearch = int(params["quantizer_ef_search"])
