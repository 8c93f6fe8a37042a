"""Service start-up and ``/expand`` at scale, in process, on a synthetic bundle (no model, no Redis).

Builds a bundle of ``--anchors`` anchors (IVF with ``--nlist`` lists: smaller than the tuned
16,384 so it builds in seconds; the index file has the same size) plus ``--population``
memory-mapped population embeddings, then measures with wall and CPU time side by side:

- start-up pieces: ``load_bundle`` with the full rehash (before) and the fast check (after),
  the runtime's construction, the population statistics pass;
- ``/expand`` for a ``--seed``-customer seed and ``--target`` lookalikes: the ranking
  (suppression re-check by an in-memory reader), the suppression re-check of ~105k ids on a
  real ``redis-server`` (the direct reader's script) measured on its own, and the response body built the former way (one pydantic object
  per customer, serialised by pydantic) and the current way (:mod:`serving.responses`).

Targets (2 cores, 2M population): start-up to ready <= 15 s (model load and HTTP server
start come on top: ``bench_serving.py`` measures the whole), ``/expand`` p99 <= 500 ms.
Run on a quiet machine; the 1-minute load average is printed with the figures::

    python bench/bench_expand_scale.py --anchors 1000000 --population 2000000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def load() -> str:
    return open("/proc/loadavg").read().split()[0] if Path("/proc/loadavg").exists() else "n/a"


def timed(label: str, fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float, float]:
    """Best of ``repeat`` (wall ms, CPU ms) of ``fn()``; prints one line."""
    best_wall = best_cpu = float("inf")
    result = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best_wall = min(best_wall, (time.perf_counter() - wall) * 1e3)
        best_cpu = min(best_cpu, (time.process_time() - cpu) * 1e3)
    print(f"  {label:<58} wall {best_wall:9.1f} ms   CPU {best_cpu:9.1f} ms   load {load()}")
    return result, best_wall, best_cpu


class InMemorySuppression:
    """Who is suppressed now (nobody here): the reader's ``suppressed`` interface."""

    def suppressed(self, ids: np.ndarray) -> np.ndarray:
        return np.zeros(len(ids), dtype=bool)


def suppression_recheck(n: int, workdir: Path) -> None:
    """The request-time suppression re-check of ``n`` ids on a real ``redis-server``: the
    direct reader's server-side script over Feast-style hashes (one per id, flag field)."""
    import struct

    import redis

    from lookalike.local_redis import LocalRedis
    from lookalike.online import _SUPPRESSED_CHUNK, _SUPPRESSED_SCRIPT, _TRUE_CELL

    (workdir / "redis").mkdir(exist_ok=True)
    server = LocalRedis(workdir / "redis").start()
    try:
        client = redis.Redis.from_url(server.url)
        ids = np.arange(n, dtype=np.int64) + 5 * 10**11
        prefix, suffix, field = b"\x02\x00\x00\x00customer_id", b"bench", b"suppressed"
        with client.pipeline(transaction=False) as pipe:
            for i in ids.tolist():
                pipe.hset(prefix + struct.pack("<q", i) + suffix, field, _TRUE_CELL if i % 97 == 0 else b"\x00")
            pipe.execute()
        script = client.register_script(_SUPPRESSED_SCRIPT)

        def recheck() -> np.ndarray:
            return np.concatenate([np.frombuffer(script(args=[ids[s:s + _SUPPRESSED_CHUNK].tobytes(), prefix, suffix,
                                                               field, _TRUE_CELL]), np.uint8)
                                   for s in range(0, n, _SUPPRESSED_CHUNK)]) == ord("1")

        before = client.info("cpu")
        flags, _, _ = timed(f"suppression re-check of {n:,} ids (Redis script, client side)", recheck, 3)
        after = client.info("cpu")
        used = sum(after[k] - before[k] for k in ("used_cpu_user", "used_cpu_sys")) / 3 * 1e3
        print(f"    redis-server CPU per re-check {used:.0f} ms; {int(flags.sum()):,} flagged")
    finally:
        server.stop()


def build(path: Path, n_anchors: int, n_population: int, dim: int, nlist: int, segments: int) -> None:
    from index_builder import faiss_backend
    from index_builder.bundle import AssignmentSpec, write_bundle
    from index_builder.population_embeddings import add_population

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, dim)).astype(np.float32)
    vectors = np.empty((n_population, dim), dtype=np.float32)
    for start in range(0, n_population, 500_000):
        stop = min(start + 500_000, n_population)
        vectors[start:stop] = centres[rng.integers(0, 200, stop - start)]
        vectors[start:stop] += rng.standard_normal((stop - start, dim), dtype=np.float32)
    params = faiss_backend.IndexParams(type="ivf", nlist=nlist, nprobe=16, quantizer="flat", device="cpu",
                                       min_recall=0.0, recall_sample=200)
    built = faiss_backend.build_index(vectors[:n_anchors], params, recall_k=40)
    labels = sp.random(n_anchors, segments, density=0.05, format="csr", random_state=1, dtype=np.float32)
    labels.data[:] = 1
    spec = AssignmentSpec(k=40, aggregation="weighted", segments=[f"s{i}" for i in range(segments)],
                          thresholds=[0.3] * segments, search_params=dict(built.params))
    anchor_ids = rng.permutation(n_anchors).astype(np.int64) + 10**12
    write_bundle(path, built, anchor_ids, labels, spec, index_version="scale", model_version="1",
                 model_name="m", feature_service="svc", feature_service_version="1")
    extra = n_population - n_anchors
    add_population(path, np.concatenate([anchor_ids, np.arange(extra, dtype=np.int64) + 5 * 10**11]), vectors,
                   np.concatenate([np.ones(n_anchors, bool), np.zeros(extra, bool)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", type=int, default=1_000_000)
    parser.add_argument("--population", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--segments", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1_000)
    parser.add_argument("--target", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--workdir", default=None, help="keep the bundle here (default: a temp dir, removed)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from index_builder.bundle import load_bundle
    from serving.config import ServingConfig
    from serving.core import LookalikeRuntime
    from serving.models import ExpandResponse, Versions
    from serving.responses import expand_json

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-expand-"))
    path = workdir / "bundle"
    try:
        print(f"bundle: {args.anchors:,} anchors + {args.population:,} population embeddings, dim {args.dim}")
        if not (path / "manifest.json").is_file():
            timed("build + write (synthetic)", lambda: build(path, args.anchors, args.population, args.dim,
                                                             args.nlist, args.segments))
        size = sum(p.stat().st_size for p in path.iterdir()) / 1e6
        print(f"  bundle size {size:,.0f} MB (page cache warm: measures CPU, not the disk)")
        print("start-up pieces")
        timed("load_bundle, full rehash (before)", lambda: load_bundle(path, verify="full"))
        bundle, _, _ = timed("load_bundle, fast check (after)", lambda: load_bundle(path, verify="fast"))
        config = ServingConfig()
        config.expand.min_distinctiveness = 1.0
        metadata = {"model_name": "m", "model_version": "1", "index_version": "scale", "feature_service": "svc",
                    "feature_service_version": "1"}
        runtime, _, _ = timed("LookalikeRuntime(...) (anchor lookups, label matrix)", lambda: LookalikeRuntime(
            config=config, encoder=None, model_info=None, bundle=bundle, store=None,
            reader=InMemorySuppression(), contract=None, metadata=metadata))
        population, _, _ = timed("population(): memory map + statistics pass", runtime.population)

        print(f"/expand: seed {args.seed:,} customers, target_size {args.target:,}, {args.requests} requests")
        customers = population.ids[~population.opt_in]
        # a distinctive seed: the customers nearest one random member
        probe = population.embeddings[population.rows_of(customers[:1])[0]]
        near = np.argsort(-(population.embeddings[~population.opt_in][:200_000] @ probe))[:args.seed]
        seed = customers[:200_000][near]
        walls, cpus = [], []
        result = None
        for _ in range(args.requests):
            wall, cpu = time.perf_counter(), time.process_time()
            result = runtime.expand(seed_ids=seed.tolist(), target_size=args.target)
            body = expand_json(runtime.versions, result.seed, result.population, result.population_size,
                               result.customer_ids, result.scores)
            walls.append((time.perf_counter() - wall) * 1e3)
            cpus.append((time.process_time() - cpu) * 1e3)
        assert result is not None and len(result.customer_ids) == args.target, "expand returned too few"
        print(f"  expand + response body, p50 wall {np.percentile(walls, 50):.0f} ms, p99 wall "
              f"{np.percentile(walls, 99):.0f} ms, p50 CPU {np.percentile(cpus, 50):.0f} ms "
              f"(target p99 <= 500 ms over HTTP), load {load()}")
        print("  stages (best of 3):")
        centroid = population.embeddings[population.rows_of(seed)].mean(axis=0)
        timed("  matvec over the memory-mapped population", lambda: population.embeddings @ centroid, 3)
        timed("  runtime.expand (ranking + suppression re-check)", lambda: runtime.expand(
            seed_ids=seed.tolist(), target_size=args.target), 3)
        versions = Versions(**{k: v for k, v in metadata.items()})

        def former_body() -> bytes:
            return ExpandResponse(versions=versions, seed=result.seed, population="non_opt_in",
                                  population_size=result.population_size,
                                  customers=result.customers).model_dump_json().encode()

        timed("  response, former: pydantic objects + model_dump_json", former_body, 3)
        timed("  response, now: serving.responses.expand_json", lambda: expand_json(
            versions, result.seed, "non_opt_in", result.population_size, result.customer_ids, result.scores), 3)
        print(f"  body {len(body) / 1e6:.1f} MB")
        suppression_recheck(int(args.target * 1.05), workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
