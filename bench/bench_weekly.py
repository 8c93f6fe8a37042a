"""End-to-end weekly inference: 1,000,000 opt-in anchors + 2,000,000 non-opt-in customers.

Times what the thesis calls the inference cycle (published: under 90 s on GPU): embed
everyone with a real tower of the default model config, build the anchor index (with the
recall guarantee of :func:`index_builder.faiss_backend.build_index`), search the default
k=40 neighbours for every non-opt-in customer (an IVF index: through its spilled lists,
rebuilt from the saved index as the weekly job does after reloading the bundle; see
:mod:`index_builder.spilled_lists`), aggregate neighbour segments and apply the
per-segment thresholds. Target on the project's 2-core CPU box: <= 60 s at recall@40 >= 0.95.

Inputs are SYNTHETIC (stated in the output): preprocessed feature matrices drawn from
200 latent customer archetypes (so the embedding space has structure, as with real
customers), 60 segments per anchor drawn from its archetype. The tower has default
config (hidden [256, 128], 64-dim embedding) and random weights: inference cost does
not depend on the weights. Generating the synthetic inputs is not timed (reading
features is the Spark/Feast stages' bench). The index is ``IndexParams()``'s default
unless ``--index`` overrides it (``key=value`` pairs of IndexParams). Recall@k of the
weekly search itself vs exact search is measured on 2,000 sampled customers (not timed).

``--devices cpu,auto`` runs the same inputs once per device and prints them side by side
(``bench/gpu_check.sh`` does this on a CUDA machine). Only numpy/torch/faiss/scipy are
imported on this path (no feast, mlflow), so it runs on a bare GPU box.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from index_builder import faiss_backend  # noqa: E402
from index_builder.aggregation import decide, score_neighbours  # noqa: E402
from index_builder.spilled_lists import ivf_centroids, spill_lists  # noqa: E402
from training.config import ModelConfig  # noqa: E402
from training.model import Tower, embed_arrays  # noqa: E402

TARGET_SECONDS = 60.0
TARGET_RECALL = 0.95
DENSE_DIM = 128  # about the width of the default contract's preprocessed dense features
REGION_CARDINALITY = 3001
SEGMENTS = 60
ARCHETYPES = 200


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def synthetic_chunks(n: int, chunk: int, seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(ARCHETYPES, DENSE_DIM)).astype(np.float32)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        archetype = rng.integers(0, ARCHETYPES, size)
        dense = centres[archetype] + 0.5 * rng.standard_normal((size, DENSE_DIM), dtype=np.float32)
        region = rng.integers(0, REGION_CARDINALITY, (size, 1))
        yield archetype, dense, region


@dataclass
class Inputs:
    """Synthetic preprocessed features, generated once and shared by every device run."""

    anchor_dense: np.ndarray
    anchor_region: np.ndarray
    anchor_archetype: np.ndarray
    customer_dense: np.ndarray
    customer_region: np.ndarray


def make_inputs(anchors: int, customers: int) -> Inputs:
    def collect(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = list(synthetic_chunks(n, 250_000, seed))
        return (np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]),
                np.concatenate([p[0] for p in parts]))

    a_dense, a_region, a_arch = collect(anchors, 11)
    c_dense, c_region, _ = collect(customers, 12)
    return Inputs(a_dense, a_region, a_arch, c_dense, c_region)


def anchor_labels(archetypes: np.ndarray, seed: int = 1) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    profile = rng.random((ARCHETYPES, SEGMENTS)) < 0.06
    held = profile[archetypes] & (rng.random((len(archetypes), SEGMENTS)) < 0.85)
    return sp.csr_matrix(held.astype(np.uint8))


@dataclass
class Run:
    device: str
    seconds: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def run_once(inputs: Inputs, labels: sp.csr_matrix, device: str, k: int, params: faiss_backend.IndexParams,
             embed_batch: int) -> tuple[Run, np.ndarray, np.ndarray, np.ndarray]:
    run = Run(device)
    resolved, why = faiss_backend.resolve_device(params.device)
    torch_device = "cuda" if resolved != "cpu" and torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    tower = Tower(DENSE_DIM, [REGION_CARDINALITY], ModelConfig()).eval().to(torch_device)
    start = time.perf_counter()
    anchors = embed_arrays(tower, inputs.anchor_dense, inputs.anchor_region, batch_size=embed_batch)
    customers = embed_arrays(tower, inputs.customer_dense, inputs.customer_region, batch_size=embed_batch)
    run.seconds[f"embed {len(anchors) + len(customers):,}"] = time.perf_counter() - start
    start = time.perf_counter()
    built = faiss_backend.build_index(anchors, params, recall_k=k)
    run.seconds["index build + recall check"] = time.perf_counter() - start
    bulk = None
    if built.bulk is not None:
        # the weekly job reloads the bundle and re-spills from the saved index (IndexBundle.bulk_lists)
        start = time.perf_counter()
        bulk = spill_lists(faiss_backend.stored_vectors(built.index), ivf_centroids(built.index), built.bulk.spill)
        run.seconds["spilled lists from the saved index"] = time.perf_counter() - start
    start = time.perf_counter()
    sims, ids = faiss_backend.search(built.searcher(), faiss_backend.l2_normalise(customers), k,
                                     batch_size=200_000, progress=True, bulk=bulk)
    run.seconds[f"search {len(customers):,} x k={k}"] = time.perf_counter() - start
    start = time.perf_counter()
    thresholds = np.full(SEGMENTS, 0.3, dtype=np.float32)
    assigned = 0
    for lo in range(0, len(ids), 250_000):
        scores = score_neighbours(sims[lo:lo + 250_000], ids[lo:lo + 250_000], labels, "weighted")
        assigned += int(decide(scores, thresholds).sum())
    run.seconds["aggregate + threshold"] = time.perf_counter() - start
    run.notes.update(
        embed_on=torch_device, search_on=built.device, why=why, index=built.index_type,
        params={key: v for key, v in built.params.items() if key != "selected_by"},
        build_recall=built.recall_at_k, recall_check=built.recall_check, assigned=assigned,
        build_seconds=built.build_seconds, load=load_average(),
    )
    return run, anchors, customers, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=2_000_000)
    parser.add_argument("--k", type=int, default=40, help="neighbours (default: the assignment default, 40)")
    parser.add_argument("--devices", default="cpu", help="comma list of index.device values: cpu,auto,gpu")
    parser.add_argument("--index", nargs="*", default=[], metavar="KEY=VALUE",
                        help="IndexParams overrides, e.g. nlist=4096 nprobe=16 quantizer=flat")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch and faiss (0: all cores)")
    parser.add_argument("--embed-batch", type=int, default=65536)
    args = parser.parse_args()
    print("before: " + load_average())
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    faiss_backend.set_threads(threads)
    overrides: dict[str, Any] = {}
    for item in args.index:
        key, value = item.split("=", 1)
        default = getattr(faiss_backend.IndexParams, key)
        overrides[key] = type(default)(value)
    print(f"anchors={args.anchors:,} customers={args.customers:,} k={args.k} threads={threads}; SYNTHETIC "
          f"feature matrices ({DENSE_DIM} dense + 1 high-cardinality column), default tower config; "
          f"index overrides {overrides or 'none'}")
    inputs = make_inputs(args.anchors, args.customers)
    labels = anchor_labels(inputs.anchor_archetype)
    runs = []
    for device in [d.strip() for d in args.devices.split(",") if d.strip()]:
        params = faiss_backend.IndexParams(device=device, **overrides)
        run, anchors, customers, ids = run_once(inputs, labels, device, args.k, params, args.embed_batch)
        sample = np.random.default_rng(0).choice(args.customers, min(2000, args.customers), replace=False)
        _, truth = faiss_backend.faiss.knn(customers[sample], faiss_backend.l2_normalise(anchors), args.k,
                                           metric=faiss_backend.faiss.METRIC_INNER_PRODUCT)
        run.notes["recall"] = faiss_backend.recall_between(ids[sample], truth)
        runs.append(run)
        print(f"[{device}] {run.notes}", flush=True)
    print_summary(runs, args.k)
    print("after: " + load_average())


def print_summary(runs: list[Run], k: int) -> None:
    stages = list(dict.fromkeys(name for run in runs for name in run.seconds))
    header = f"{'stage':34s}" + "".join(f"{'index.device=' + r.device:>26s}" for r in runs)
    print("\n" + header)
    for name in stages:
        print(f"{name:34s}" + "".join(f"{r.seconds.get(name, float('nan')):25.2f}s" for r in runs))
    print(f"{'total':34s}" + "".join(f"{r.total:25.2f}s" for r in runs))
    print(f"{'ratio to the 60 s target':34s}" + "".join(
        f"{r.total / TARGET_SECONDS:20.2f}x {'met' if r.total <= TARGET_SECONDS else 'MISS':>4s}" for r in runs))
    print(f"{f'recall@{k} of the search vs exact':34s}" + "".join(
        f"{r.notes['recall']:26.4f}" for r in runs) + f"   (target >= {TARGET_RECALL})")
    print(f"{'index recall guarantee (build)':34s}" + "".join(
        f"{r.notes['build_recall']:26.4f}" for r in runs))
    for r in runs:
        print(f"  [{r.device}] embed on {r.notes['embed_on']}, search on {r.notes['search_on']}; "
              f"index {r.notes['index']} {r.notes['params']}; {r.notes['assigned']:,} lookalike assignments; "
              f"{r.notes['load']}")


if __name__ == "__main__":
    main()
