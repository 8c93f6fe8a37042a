"""FAISS index + search of n = 100,000 embeddings, every one a query, k = 10.

Reproduces the thesis' Table 5.1 setting (published: CPU 0.16 s index + 493.21 s search;
one GPU 0.34 + 1.30 s; multi-GPU 0.51 + 0.65 s). Target on the project's 2-core CPU box:
index + search <= 3 s at recall@10 >= 0.99 against exact search.

Embeddings are synthetic (stated in the output): 64-dim, L2-normalised, drawn from a
mixture of 400 overlapping clusters, like a trained tower's output where customers with
similar segments sit close together. Exact search (IndexFlatIP) is the ground truth.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index_builder import faiss_backend  # noqa: E402
from index_builder.faiss_backend import IndexParams  # noqa: E402

PUBLISHED = {"cpu": 0.16 + 493.21, "one_gpu": 0.34 + 1.30, "multi_gpu": 0.51 + 0.65}
TARGET_SECONDS = 3.0
TARGET_RECALL = 0.99


def synthetic_embeddings(n: int, dim: int, clusters: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    scales = rng.uniform(0.3, 1.0, size=(clusters, 1)).astype(np.float32)
    members = rng.integers(0, clusters, n)
    data = centres[members] + scales[members] * rng.normal(size=(n, dim)).astype(np.float32)
    return faiss_backend.l2_normalise(data)


def timed(data: np.ndarray, params: IndexParams, k: int) -> tuple[float, float, np.ndarray, str]:
    start = time.perf_counter()
    built = faiss_backend.build_index(data, params, recall_k=k)
    index_s = time.perf_counter() - start
    start = time.perf_counter()
    _, ids = faiss_backend.search(built.searcher(), data, k)
    return index_s, time.perf_counter() - start, ids, built.device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    data = synthetic_embeddings(args.n, args.dim)
    ok, why = faiss_backend.gpu_support()
    print(f"n={args.n} dim={args.dim} k={args.k}  synthetic clustered embeddings; "
          f"faiss threads={faiss_backend.faiss.omp_get_max_threads()}; GPU: {why}")
    configs = [
        ("flat (exact)", IndexParams(type="flat", device="cpu", recall_sample=0)),
        ("ivf nlist=256 nprobe=4", IndexParams(type="ivf", nlist=256, nprobe=4, device="cpu", recall_sample=0)),
        ("ivf nlist=256 nprobe=8", IndexParams(type="ivf", nlist=256, nprobe=8, device="cpu", recall_sample=0)),
        ("ivf nlist=1024 nprobe=16", IndexParams(type="ivf", nlist=1024, nprobe=16, device="cpu", recall_sample=0)),
        ("hnsw M=16 efC=40 efS=32", IndexParams(type="hnsw", hnsw_m=16, ef_construction=40, ef_search=32,
                                               device="cpu", recall_sample=0)),
    ]
    if ok:
        configs.append(("flat (exact) GPU", IndexParams(type="flat", device="gpu", recall_sample=0)))
        configs.append(("ivf nprobe=16 GPU", IndexParams(type="ivf", nlist=1024, nprobe=16, device="gpu",
                                                         recall_sample=0)))
    truth = None
    print(f"{'configuration':28s} {'index s':>8s} {'search s':>9s} {'total s':>8s} {'recall@k':>9s} "
          f"{'vs 3 s target':>13s} {'vs published CPU':>17s}")
    for name, params in configs:
        index_s, search_s, ids, device = timed(data, params, args.k)
        if truth is None:
            truth = ids
        recall = faiss_backend.recall_between(ids, truth)
        total = index_s + search_s
        verdict = "OK" if total <= TARGET_SECONDS and recall >= TARGET_RECALL else "miss"
        print(f"{name:28s} {index_s:8.2f} {search_s:9.2f} {total:8.2f} {recall:9.4f} "
              f"{total / TARGET_SECONDS:8.2f}x {verdict:4s} {PUBLISHED['cpu'] / total:15.0f}x faster  [{device}]")


if __name__ == "__main__":
    main()
