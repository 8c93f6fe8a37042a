"""FAISS index + search of n = 100,000 embeddings, every one a query, k = 10.

Reproduces the thesis' Table 5.1 setting (published: CPU 0.16 s index + 493.21 s search;
one GPU 0.34 + 1.30 s; multi-GPU 0.51 + 0.65 s). Target on the project's 2-core CPU box:
index + search <= 3 s at recall@10 >= 0.99 against exact search.

Embeddings are SYNTHETIC (stated in the output). ``--source tower`` (default): the weekly
bench's synthetic customer features (200 latent archetypes, 128 dense + 1 region column)
through a default-config tower (hidden [256, 128], 64-dim, L2-normalised; random weights),
i.e. the real model's architecture and output geometry. ``--source mixture``: 400
overlapping Gaussian clusters in 64 dims, L2-normalised. Generating embeddings is not timed.
Recall@10 is measured on ``--recall-queries`` sampled queries against exact search
(``faiss.knn``); the exact row's search time is extrapolated from ``--exact-queries``
queries unless ``--time-exact`` is given (the full exact run takes a minute or more here).
"""

from __future__ import annotations

import argparse
import os
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


def mixture_embeddings(n: int, dim: int, clusters: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    scales = rng.uniform(0.3, 1.0, size=(clusters, 1)).astype(np.float32)
    members = rng.integers(0, clusters, n)
    data = centres[members] + scales[members] * rng.normal(size=(n, dim)).astype(np.float32)
    return faiss_backend.l2_normalise(data)


# kept for callers of the earlier name
synthetic_embeddings = mixture_embeddings


def tower_embeddings(n: int, seed: int = 11) -> np.ndarray:
    import torch

    from bench.bench_weekly import DENSE_DIM, REGION_CARDINALITY, synthetic_chunks
    from training.config import ModelConfig
    from training.model import Tower, embed_arrays

    torch.manual_seed(0)
    tower = Tower(DENSE_DIM, [REGION_CARDINALITY], ModelConfig()).eval()
    parts = []
    with torch.inference_mode():
        for _, dense, region in synthetic_chunks(n, 250_000, seed):
            parts.append(embed_arrays(tower, dense, region, batch_size=65536))
    return faiss_backend.l2_normalise(np.concatenate(parts))


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--source", choices=("tower", "mixture"), default="tower")
    parser.add_argument("--dim", type=int, default=64, help="mixture source only (the tower gives 64)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recall-queries", type=int, default=5000)
    parser.add_argument("--exact-queries", type=int, default=10_000)
    parser.add_argument("--time-exact", action="store_true", help="time exact search of all n queries")
    parser.add_argument("--with-hnsw", action="store_true", help="also time an HNSW graph (slow build)")
    args = parser.parse_args()
    faiss_backend.set_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:  # pragma: no cover - torch is a project dependency
        pass
    data = tower_embeddings(args.n) if args.source == "tower" else mixture_embeddings(args.n, args.dim)
    _, why = faiss_backend.resolve_device("auto")
    default = IndexParams()
    nlist, nprobe, quantizer = faiss_backend.tuned_ivf(args.n)
    print(f"n={args.n:,} dim={data.shape[1]} k={args.k}  SYNTHETIC {args.source} embeddings; "
          f"faiss threads={faiss_backend.faiss.omp_get_max_threads()}; GPU: {why or 'faiss GPU'}")
    print(f"IndexParams() default: type={default.type} -> {default.resolved_type(args.n)} "
          f"(nlist={nlist} nprobe={nprobe} quantizer={quantizer}); {load_average()}")
    sample = np.random.default_rng(0).choice(args.n, size=min(args.recall_queries, args.n), replace=False)
    _, truth = faiss_backend.faiss.knn(data[sample], data, args.k, metric=faiss_backend.faiss.METRIC_INNER_PRODUCT)

    def ivf(nl: int, npr: int) -> IndexParams:
        return IndexParams(type="ivf", nlist=nl, nprobe=npr, quantizer="flat", device="cpu", recall_sample=0)

    configs: list[tuple[str, IndexParams]] = [
        ("flat (exact)", IndexParams(type="flat", device="cpu", recall_sample=0)),
        ("auto (default)", IndexParams(device="cpu", recall_sample=0)),
        ("ivf nlist=256 nprobe=4", ivf(256, 4)),
        ("ivf nlist=512 nprobe=8", ivf(512, 8)),
        ("ivf nlist=1024 nprobe=8", ivf(1024, 8)),
    ]
    if args.with_hnsw:
        configs.append(("hnsw M=16 efC=40 efS=32", IndexParams(type="hnsw", hnsw_m=16, ef_construction=40,
                                                                ef_search=32, device="cpu", recall_sample=0)))
    gpu_device, _ = faiss_backend.resolve_device("auto")
    if gpu_device != "cpu":  # faiss-gpu, or exact torch search on CUDA (faiss-cpu on a GPU box)
        configs.append((f"flat (exact) {gpu_device}", IndexParams(type="flat", device="gpu", recall_sample=0)))
        configs.append((f"auto {gpu_device}", IndexParams(device="gpu", recall_sample=0)))
    print(f"{'configuration':26s} {'params':34s} {'build s':>8s} {'search s':>9s} {'total s':>8s} "
          f"{'recall@10':>9s} {'vs 3 s':>7s} {'vs published 493 s':>19s}")
    for name, params in configs:
        start = time.perf_counter()
        built = faiss_backend.build_index(data, params, recall_k=args.k)
        build_s = time.perf_counter() - start
        exact_row = built.index_type == "flat" and built.device == "cpu" and not args.time_exact
        queries = data[: args.exact_queries] if exact_row else data
        start = time.perf_counter()
        faiss_backend.search(built.searcher(), queries, args.k)
        search_s = (time.perf_counter() - start) * (args.n / len(queries))
        _, ids = faiss_backend.search(built.searcher(), data[sample], args.k)
        recall = faiss_backend.recall_between(ids, truth)
        total = build_s + search_s
        verdict = "OK" if total <= TARGET_SECONDS and recall >= TARGET_RECALL else "miss"
        shown = " ".join(f"{k}={v}" for k, v in built.params.items() if k != "selected_by") or "-"
        note = f" (search extrapolated from {len(queries):,} queries)" if exact_row else ""
        print(f"{name:26s} {built.index_type + ' ' + shown:34s} {build_s:8.2f} {search_s:9.2f} {total:8.2f} "
              f"{recall:9.4f} {total / TARGET_SECONDS:6.2f}x {verdict:4s} {PUBLISHED['cpu'] / total:9.0f}x faster"
              f"  [{built.device}]{note}", flush=True)
    print(load_average())


if __name__ == "__main__":
    main()
