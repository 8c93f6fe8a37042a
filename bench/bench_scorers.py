"""What the selected scorers cost per ``/assign`` request, next to the tower kNN alone.

Loads an index bundle with scorer selection (e.g. one written by ``bench/bench_quality.py``)
and times :meth:`IndexBundle.assign_scores` -- the scoring step of ``/assign`` -- for 1 and
for 100 customers, against the tower-kNN-only path (``IndexBundle.score`` + decide), and each
candidate scorer over all segments. Queries are anchors (their embeddings reconstructed from
the exact index, their stored feature rows), excluded from their own neighbours.

``--scale`` instead times the exact feature-space kNN scorers on synthetic anchors (187
features, like the demo base) at growing anchor counts: what one ``/assign`` customer and the
build's leave-one-out scoring cost, the figures behind ``assignment.feature_knn_max_anchors``.

BLAS, OpenMP and FAISS run at one thread (as the builder does); CPU time is printed next to
wall time because the benchmark machine is usually shared.

    python bench/bench_scorers.py /tmp/quality-bench/c20000/bundle-seed0
    python bench/bench_scorers.py --scale
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """``(wall ms, CPU ms)`` per call: CPU time is what to compare on a shared machine."""
    fn()
    began, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - began) / repeats, 1000 * (time.process_time() - cpu) / repeats


def scale_table(anchor_counts: list[int], features: int = 187, k: int = 40) -> None:
    """Exact feature-space kNN cost per query and per leave-one-out build, by anchor count."""
    from index_builder import faiss_backend
    from index_builder.scorers import _flat_index, inverse_weighted_norms, weighted_knn_votes

    rng = np.random.default_rng(0)
    print(f"load {os.getloadavg()[0]:.1f}; {features} features, k={k}; leave-one-out = per-query batch cost x anchors")
    print("| anchors | scorer | segments | 1 customer: wall / CPU ms | batch: CPU ms per customer | "
          "leave-one-out build: CPU s |")
    print("|---|---|---|---|---|---|")
    for n in anchor_counts:
        pool = rng.normal(size=(n, features)).astype(np.float32)
        batch = pool[:max(50, 200_000 // n)]
        for segments in (15, 60):
            weights = rng.random((segments, features)).astype(np.float32)
            holders = (rng.random((n, segments)) < 0.2).astype(np.float32)
            norms = inverse_weighted_norms(pool, weights)
            vote = functools.partial(weighted_knn_votes, pool, holders, weights=weights, k=k, inverse_norms=norms)
            one = timed(functools.partial(vote, pool[:1]), 10)
            per = timed(functools.partial(vote, batch), 1)[1] / len(batch)
            print(f"| {n:,} | iv_weighted_knn | {segments} | {one[0]:.2f} / {one[1]:.2f} | {per:.3f} | "
                  f"{per * n / 1000:.1f} |", flush=True)
        index = _flat_index(faiss_backend.l2_normalise(pool))
        one = timed(functools.partial(faiss_backend.search, index, faiss_backend.l2_normalise(pool[:1]), k), 10)
        per = timed(functools.partial(faiss_backend.search, index, faiss_backend.l2_normalise(batch), k), 1)[1]
        per /= len(batch)
        print(f"| {n:,} | raw_feature_knn | all | {one[0]:.2f} / {one[1]:.2f} | {per:.3f} | {per * n / 1000:.1f} |",
              flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f}")


def main() -> None:
    from index_builder.bundle import load_bundle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, nargs="?")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--scale", type=int, nargs="*", metavar="ANCHORS",
                        help="time feature-space kNN at these anchor counts instead (default 2,000 10,000 50,000)")
    args = parser.parse_args()
    if args.scale is not None:
        scale_table(args.scale or [2_000, 10_000, 50_000])
        return
    if args.bundle is None:
        parser.error("give a bundle, or --scale")
    bundle = load_bundle(args.bundle)
    assert bundle.selection is not None and bundle.scorers is not None, "bundle has no scorer selection"
    n = len(bundle.anchor_ids)
    rng = np.random.default_rng(0)
    features = bundle.scorers.anchor_features
    assert features is not None, "bundle stores no anchor features (iv_weighted_knn not fitted)"
    counts = {k: len(v) for k, v in bundle.selection.columns_by_scorer().items()}
    print(f"bundle {args.bundle.name}: {n:,} anchors, {len(bundle.segments)} segments, "
          f"{features.shape[1]} feature columns; shipped segments per scorer: {counts}; "
          f"load {os.getloadavg()[0]:.1f}")
    print("| request | tower kNN only: wall / CPU ms | selected scorers: wall / CPU ms | CPU ratio |")
    print("|---|---|---|---|")
    for size in (1, 100):
        rows = rng.choice(n, size, replace=False)
        vectors = np.vstack([bundle.index.reconstruct(int(r)) for r in rows])

        base = timed(lambda v=vectors, r=rows: bundle.decide(bundle.score(v, r)), args.repeats)  # type: ignore[misc]
        full = timed(lambda v=vectors, r=rows: bundle.assign_scores(v, features[r], r), args.repeats)  # type: ignore[misc]
        print(f"| {size} customer{'s' if size > 1 else ''} | {base[0]:.2f} / {base[1]:.2f} | "
              f"{full[0]:.2f} / {full[1]:.2f} | {full[1] / max(base[1], 1e-9):.1f}x |")
    print("\nper candidate, all segments, 1 customer (wall / CPU ms):")
    row = rng.choice(n, 1)
    vector = bundle.index.reconstruct(int(row[0]))[None, :]
    for name in bundle.selection.scorers:
        wall, cpu = timed(lambda name=name: bundle.method_scores(name, vector, features[row], None, row),  # type: ignore[misc]
                          args.repeats)
        print(f"  {name:22s} {wall:8.2f} / {cpu:8.2f}")
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    with threadpool_limits(1):
        main()
