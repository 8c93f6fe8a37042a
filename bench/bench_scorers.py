"""What the selected scorers cost per ``/assign`` request, next to the tower kNN alone.

Loads an index bundle with scorer selection (e.g. one written by ``bench/bench_quality.py``)
and times :meth:`IndexBundle.assign_scores` -- the scoring step of ``/assign`` -- for 1 and
for 100 customers, against the tower-kNN-only path (``IndexBundle.score`` + decide), and each
candidate scorer over all segments. Queries are anchors (their embeddings reconstructed from
the exact index, their stored feature rows), excluded from their own neighbours.

    python bench/bench_scorers.py /tmp/quality-bench/c20000/bundle-seed0
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """``(wall ms, CPU ms)`` per call: CPU time is what to compare on a shared machine."""
    fn()
    began, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - began) / repeats, 1000 * (time.process_time() - cpu) / repeats


def main() -> None:
    from index_builder.bundle import load_bundle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
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
    main()
