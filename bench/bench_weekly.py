"""End-to-end weekly inference: 1,000,000 opt-in anchors + 2,000,000 non-opt-in customers.

Times what the thesis calls the inference cycle (published: under 90 s on GPU): embed
everyone with a real tower of the default model config, build the anchor index, search
k=10 neighbours for every non-opt-in customer, aggregate neighbour segments and apply
the per-segment thresholds. Target on the project's 2-core CPU box: <= 90 s.

Inputs are SYNTHETIC (stated in the output): preprocessed feature matrices drawn from
200 latent customer archetypes (so the embedding space has structure, as with real
customers), 60 segments per anchor drawn from its archetype. The tower has default
config (hidden [256, 128], 64-dim embedding) and random weights: inference cost does
not depend on the weights. Generating the synthetic inputs is not timed (reading
features is the Spark/Feast stages' bench). The index is ``IndexParams()``'s default
(``auto`` -> the tuned IVF for 1M anchors) unless ``--nlist/--nprobe/--quantizer`` are
given. Recall@10 vs exact search is measured on 2,000 sampled queries (not timed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from index_builder import faiss_backend  # noqa: E402
from index_builder.aggregation import decide, score_neighbours  # noqa: E402
from training.artifact import embed_arrays  # noqa: E402
from training.config import ModelConfig  # noqa: E402
from training.model import Tower  # noqa: E402

TARGET_SECONDS = 90.0
DENSE_DIM = 128  # about the width of the default contract's preprocessed dense features
REGION_CARDINALITY = 3001
SEGMENTS = 60
ARCHETYPES = 200


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, start: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def synthetic_chunks(n: int, chunk: int, seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(ARCHETYPES, DENSE_DIM)).astype(np.float32)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        archetype = rng.integers(0, ARCHETYPES, size)
        dense = centres[archetype] + 0.5 * rng.standard_normal((size, DENSE_DIM), dtype=np.float32)
        region = rng.integers(0, REGION_CARDINALITY, (size, 1))
        yield archetype, dense, region


def embed_all(tower: Tower, n: int, seed: int, timer: Timer, chunk: int = 250_000) -> tuple[np.ndarray, np.ndarray]:
    from tqdm import tqdm

    out = np.empty((n, ModelConfig().embedding_dim), dtype=np.float32)
    archetypes = np.empty(n, dtype=np.int64)
    position = 0
    for archetype, dense, region in tqdm(synthetic_chunks(n, chunk, seed), total=-(-n // chunk), desc="embed"):
        start = time.perf_counter()
        with torch.inference_mode():
            out[position:position + len(dense)] = embed_arrays(tower, dense, region, batch_size=65536)
        timer.add("embed", start)
        archetypes[position:position + len(dense)] = archetype
        position += len(dense)
    return out, archetypes


def anchor_labels(archetypes: np.ndarray, seed: int = 1) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    profile = rng.random((ARCHETYPES, SEGMENTS)) < 0.06
    held = profile[archetypes] & (rng.random((len(archetypes), SEGMENTS)) < 0.85)
    return sp.csr_matrix(held.astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=2_000_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nlist", type=int, default=0, help="0: the tuned default (tuned_ivf)")
    parser.add_argument("--nprobe", type=int, default=0, help="0: the tuned default (tuned_ivf)")
    parser.add_argument("--quantizer", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print("before: load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    torch.set_num_threads(args.threads)
    faiss_backend.set_threads(args.threads)
    print(f"anchors={args.anchors:,} customers={args.customers:,} k={args.k} threads={args.threads}; "
          f"SYNTHETIC feature matrices ({DENSE_DIM} dense + 1 high-cardinality column), default tower config")
    tower = Tower(DENSE_DIM, [REGION_CARDINALITY], ModelConfig()).eval()
    timer = Timer()
    anchors, anchor_archetypes = embed_all(tower, args.anchors, 11, timer)
    customers, _ = embed_all(tower, args.customers, 12, timer)
    labels = anchor_labels(anchor_archetypes)
    params = faiss_backend.IndexParams(nlist=args.nlist, nprobe=args.nprobe, quantizer=args.quantizer,
                                       device="auto", recall_sample=0)
    start = time.perf_counter()
    built = faiss_backend.build_index(anchors, params)
    timer.add("index", start)
    start = time.perf_counter()
    sims, ids = faiss_backend.search(built.searcher(), customers, args.k, batch_size=100_000, progress=True)
    timer.add("search", start)
    start = time.perf_counter()
    thresholds = np.full(SEGMENTS, 0.3, dtype=np.float32)
    assigned = 0
    for lo in range(0, len(ids), 250_000):
        scores = score_neighbours(sims[lo:lo + 250_000], ids[lo:lo + 250_000], labels, "weighted")
        assigned += int(decide(scores, thresholds).sum())
    timer.add("aggregate", start)
    total = sum(timer.seconds.values())
    sample = np.random.default_rng(0).choice(args.customers, 2000, replace=False)
    _, truth = faiss_backend.faiss.knn(customers[sample], anchors, args.k,
                                       metric=faiss_backend.faiss.METRIC_INNER_PRODUCT)
    recall = faiss_backend.recall_between(ids[sample], truth)
    for name, seconds in timer.seconds.items():
        print(f"  {name:10s} {seconds:8.2f} s")
    print(f"  {'total':10s} {total:8.2f} s   target {TARGET_SECONDS:.0f} s -> ratio {total / TARGET_SECONDS:.2f} "
          f"({'OK' if total <= TARGET_SECONDS else 'MISS'})")
    print(f"  index: {built.index_type} {built.params} on {built.device}; "
          f"recall@{args.k} vs exact on 2,000 queries: {recall:.4f}; lookalike assignments: {assigned:,}")
    print("after: load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
