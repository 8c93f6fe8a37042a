"""Online serving load test on loopback: /assign latency and throughput against 1M anchors.

Needs an applied Feast repo whose offline tables hold features (e.g. after ``make demo``,
or a test session's ``materialized_repo_dir``) and a ``champion`` in MLflow. The bench
starts a private ``redis-server`` on a free loopback port, loads the repo's online views
into it (fast Redis loader) and serves from it (``LOOKALIKE_ONLINE_STORE=redis``). The
anchor side is synthetic: 1,000,000 random unit vectors with random segment labels,
indexed as the index builder would (``--index-type auto``: tuned IVF at this size), stamped
with the champion's model/feature-service versions. Then a real ``bentoml serve``
subprocess on 127.0.0.1 is measured:

- p50/p99 latency of single-customer ``/assign`` (sequential, one client);
- assignments/s with batching: concurrent clients each sending ``--batch`` ids;
- the HTTP floor (``GET /healthz`` p50) and, in-process on the same bundle and Redis, the
  median time of each /assign stage (Feast vs direct Redis read, encoder, FAISS search).

``--readers auto,feast`` serves once per online reader engine (``LOOKALIKE_ONLINE_READER``)
so the direct Redis read path and Feast's are compared in one run, under the same load.

Bounded by ``--requests`` and ``--seconds``. Targets (2 cores): p99 <= 10 ms, >= 4,000
assignments/s. The 1-minute load average is printed with each figure (shared machine).
Example::

    python bench/bench_serving.py --feature-repo feature_repo --tracking-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import scipy.sparse as sp

from lookalike.local_redis import LocalRedis, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

P99_TARGET_MS = 10.0
STARTUP_TARGET_S = 15.0
EXPAND_P99_TARGET_MS = 500.0
THROUGHPUT_TARGET = 4_000.0
ARCHETYPES = 200


def synthetic_bundle(out_dir: Path, n_anchors: int, tracking_uri: str, model_alias: str, index_type: str,
                     population: int = 0) -> Path:
    import mlflow

    from index_builder import faiss_backend
    from index_builder.bundle import AssignmentSpec, write_bundle
    from index_builder.config import AssignmentParams
    from training.artifact import load_registered_encoder

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    encoder, info = load_registered_encoder(tracking_uri, alias_or_version=model_alias)
    vectors, archetype = tower_shaped_anchors(encoder, n_anchors)
    assignment_params = AssignmentParams()
    built = faiss_backend.build_index(vectors, faiss_backend.IndexParams(type=index_type, device="cpu"),
                                      recall_k=assignment_params.k)
    n_segments = len(encoder.segments)
    rng = np.random.default_rng(0)
    profile = rng.random((ARCHETYPES, n_segments)) < 0.06
    held = profile[archetype] & (rng.random((n_anchors, n_segments)) < 0.85)
    labels = sp.csr_matrix(held.astype(np.uint8))
    assignment = AssignmentSpec(k=assignment_params.k, aggregation="weighted", segments=list(encoder.segments),
                                thresholds=[0.3] * n_segments, threshold_mode="fixed",
                                search_params=dict(built.params))
    # Synthetic anchor ids far above real customer ids, shuffled like real ids: nobody is
    # their own anchor.
    anchor_ids = rng.permutation(n_anchors).astype(np.int64) + 10**12
    path = out_dir / "bench-1m"
    write_bundle(path, built, anchor_ids, labels, assignment, index_version="bench-1m", run_date="bench",
                 model_name=info.name, model_version=info.version,
                 feature_service=info.feature_service, feature_service_version=info.feature_service_version)
    if population > 0:  # what the weekly job adds: anchors + scored customers, for /expand
        from index_builder.population_embeddings import add_population

        extra = max(0, population - n_anchors)
        customers, _ = tower_shaped_anchors(encoder, extra, seed=8)
        add_population(path, np.concatenate([anchor_ids, np.arange(extra, dtype=np.int64) + 5 * 10**11]),
                       np.concatenate([vectors, customers]),
                       np.concatenate([np.ones(n_anchors, bool), np.zeros(extra, bool)]))
        print(f"  population: {n_anchors + extra:,} embeddings in the bundle")
    print(f"  index {built.index_type} {built.params} recall@{built.recall_k} {built.recall_at_k} "
          f"(guarantee: {built.recall_check})")
    return path


def tower_shaped_anchors(encoder: Any, n: int, chunk: int = 200_000, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """``n`` embeddings from the champion's tower over synthetic inputs around archetypes."""
    import torch

    from training.model import embed_arrays

    dim = encoder.preprocessor.dense_dim
    centres = np.random.default_rng(7).normal(size=(ARCHETYPES, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    archetype = rng.integers(0, ARCHETYPES, n)
    cardinalities = encoder.preprocessor.cardinalities
    out = np.empty((n, encoder.embedding_dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, chunk):
            rows = archetype[start:start + chunk]
            dense = centres[rows] + 0.5 * rng.standard_normal((len(rows), dim), dtype=np.float32)
            index = np.stack([rng.integers(0, c, len(rows)) for c in cardinalities], axis=1) if cardinalities \
                else np.zeros((len(rows), 0), np.int64)
            out[start:start + len(rows)] = embed_arrays(encoder.tower, dense, index, batch_size=65536)
    return out, archetype


def load_average() -> str:
    return "load avg " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def stage_breakdown(repo: Path, connection: str, tracking_uri: str, model_alias: str, bundle: Path,
                    ids: np.ndarray, batch: int, repeats: int = 30) -> list[tuple[str, float, float]]:
    """In-process median ms of each /assign stage for 1 and ``batch`` customers (same bundle, same Redis)."""
    from lookalike.online import OnlineFeatureReader
    from serving.config import ServingConfig
    from serving.core import LookalikeRuntime

    config = ServingConfig(feature_repo=repo.resolve(), online_store="redis", redis_connection=connection,
                           tracking_uri=tracking_uri, model_alias=model_alias, index_dir=bundle)
    config.expand.build_population_at_load = False
    runtime = LookalikeRuntime.load(config)
    readers = {engine: OnlineFeatureReader(runtime.store, runtime.contract, engine=engine)
               for engine in ("redis", "feast")}
    rng = np.random.default_rng(2)

    def median_ms(call: Any, n: int) -> float:
        call()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1000)
        return float(np.median(times))

    def timed_stages(size: int) -> list[tuple[str, float, float]]:
        chosen = rng.choice(ids, size=size, replace=False)
        n = repeats if size == 1 else max(3, repeats // 5)
        columns, _, _ = readers["redis"].read_columns_with_status(chosen)
        embeddings = runtime.encoder.embed(columns)
        exclude = runtime.bundle.anchor_rows(chosen)
        stages = [
            ("online read, Feast get_online_features (+ status)", lambda: readers["feast"].read_with_status(chosen)),
            ("online read, direct Redis HMGET (+ status)", lambda: readers["redis"].read_with_status(chosen)),
            ("online read, columns (serving hot path)", lambda: readers["redis"].read_columns_with_status(chosen)),
            ("encoder.embed (numpy preprocessing + forward)", lambda: runtime.encoder.embed(columns)),
            ("FAISS search + exclusion", lambda: runtime.bundle.search(embeddings, runtime.k, exclude_anchor_rows=exclude)),
            ("runtime.assign total (serving reader)", lambda: runtime.assign(chosen.tolist())),
        ]
        return [(name, float(size), median_ms(call, n if "Feast" not in name else max(3, n // 3)))
                for name, call in stages]

    rows = timed_stages(1) + timed_stages(batch)
    return rows


def run_http_phases(url: str, ids: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in ids[:50]:  # warm-up
            client.post("/assign", json={"customer_ids": [int(i)]})
        floor: list[float] = []
        for _ in range(200):  # the HTTP stack alone: an open endpoint that does no work
            t0 = time.perf_counter()
            client.get("/healthz")
            floor.append((time.perf_counter() - t0) * 1000)
        latencies: list[float] = []
        deadline = time.perf_counter() + args.seconds
        while len(latencies) < args.requests and time.perf_counter() < deadline:
            cid = int(rng.choice(ids))
            t0 = time.perf_counter()
            response = client.post("/assign", json={"customer_ids": [cid]})
            latencies.append((time.perf_counter() - t0) * 1000)
            response.raise_for_status()
    result: dict[str, Any] = {"requests": len(latencies), "p50": percentile(latencies, 50),
                              "p99": percentile(latencies, 99), "healthz_p50": percentile(floor, 50),
                              "load1": load_average()}

    done = 0
    errors = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + min(args.seconds, 20.0)

    def client_loop(seed: int) -> None:
        nonlocal done, errors
        local = np.random.default_rng(seed)
        with httpx.Client(base_url=url, timeout=60) as c:
            while time.perf_counter() < stop_at:
                batch = local.choice(ids, size=args.batch).tolist()
                r = c.post("/assign", json={"customer_ids": batch})
                with lock:
                    if r.status_code == 200:
                        done += len(batch)
                    else:
                        errors += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(s,)) for s in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.update(throughput=done / (time.perf_counter() - t0), errors=errors, load2=load_average())
    if args.seeds:
        expand_ms: list[float] = []
        returned = 0
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in range(args.expand_requests + 1):
                body = {"seed_customer_ids": args.seeds[i % len(args.seeds)], "target_size": args.target_size}
                t0 = time.perf_counter()
                response = client.post("/expand", json=body)
                elapsed = (time.perf_counter() - t0) * 1000
                response.raise_for_status()
                if i:  # the first one warms the memory map
                    expand_ms.append(elapsed)
                    returned = len(response.json()["customers"])
        result.update(expand_p50=percentile(expand_ms, 50), expand_p99=percentile(expand_ms, 99),
                      expand_n=len(expand_ms), expand_returned=returned, load3=load_average())
    return result


def expand_seeds(bundle: Path, count: int, size: int) -> list[list[int]]:
    """Coherent seed audiences: the ``size`` population members closest to a random member."""
    from index_builder.population_embeddings import load_population

    population = load_population(bundle)
    if population is None:
        return []
    rng = np.random.default_rng(5)
    seeds = []
    for row in rng.choice(len(population.ids), size=count, replace=False):
        sims = population.embeddings @ population.embeddings[row]
        seeds.append(population.ids[np.argpartition(-sims, size)[:size]].tolist())
    return seeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feature-repo", default="feature_repo")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--model-alias", default="champion")
    parser.add_argument("--anchors", type=int, default=1_000_000)
    parser.add_argument("--customer-ids", default="1-2000", help="range of ids to query, e.g. 1-2000")
    parser.add_argument("--requests", type=int, default=2_000, help="single-customer requests (max)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time bound per phase")
    parser.add_argument("--batch", type=int, default=200, help="ids per request in the throughput phase")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--index-type", default="auto", help="auto (as the index builder) | flat | ivf | hnsw")
    parser.add_argument("--end-date", default=None, help="materialize features up to this date (default: now)")
    parser.add_argument("--readers", default="auto",
                        help="online reader engines to serve with, one server each: auto,redis,feast "
                             "(LOOKALIKE_ONLINE_READER; auto = direct Redis)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the in-process per-stage timings")
    parser.add_argument("--population", type=int, default=2_000_000,
                        help="population embeddings in the bundle for /expand (0: none, the service embeds)")
    parser.add_argument("--expand-requests", type=int, default=20)
    parser.add_argument("--seed-size", type=int, default=1_000)
    parser.add_argument("--target-size", type=int, default=100_000)
    args = parser.parse_args()

    low, high = (int(x) for x in args.customer_ids.split("-"))
    ids = np.arange(low, high + 1)
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    started = time.perf_counter()
    bundle = synthetic_bundle(workdir, args.anchors, args.tracking_uri, args.model_alias, args.index_type,
                              args.population)
    print(f"synthetic bundle: {args.anchors:,} anchors in {time.perf_counter() - started:.1f}s ({load_average()})")
    args.seeds = expand_seeds(bundle, 5, args.seed_size) if args.population else []

    from lookalike.materialize import MaterializeConfig
    from lookalike.materialize import run as materialize

    redis = LocalRedis(workdir).start()
    redis_port = redis.port
    connection = f"127.0.0.1:{redis_port}"
    results: dict[str, dict[str, Any]] = {}
    breakdown: list[tuple[str, float, float]] = []
    try:
        started = time.perf_counter()
        report = materialize(MaterializeConfig(repo=Path(args.feature_repo), online="redis", redis_connection=connection,
                                               start_date="1970-01-01", end_date=args.end_date))
        print(f"Redis online store: {report.rows:,} view rows in {time.perf_counter() - started:.1f}s")
        if not args.no_breakdown:
            breakdown = stage_breakdown(Path(args.feature_repo), connection, args.tracking_uri, args.model_alias,
                                        bundle, ids, args.batch)
            breakdown_load = load_average()
        for reader in [r.strip() for r in args.readers.split(",") if r.strip()]:
            results[reader] = serve_and_measure(reader, bundle, connection, ids, args, workdir)
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # the 1M-anchor bundle is ~150 MB

    if breakdown:
        print(f"in-process /assign stages, median ms ({breakdown_load}):")
        for name, size, ms in breakdown:
            print(f"  {int(size):>4} ids  {name:<52} {ms:8.2f} ms")
    for reader, r in results.items():
        print(f"[reader={reader}] single-customer /assign, {r['requests']} requests, {args.anchors:,} anchors, "
              f"Redis online features")
        print(f"  HTTP floor (GET /healthz) p50 {r['healthz_p50']:7.2f} ms")
        print(f"  p50 {r['p50']:7.2f} ms")
        print(f"  p99 {r['p99']:7.2f} ms   target <= {P99_TARGET_MS:.0f} ms   ratio {P99_TARGET_MS / r['p99']:.2f}x   "
              f"({r['load1']})")
        print(f"[reader={reader}] batched /assign: {args.clients} clients x {args.batch} ids, {r['errors']} errors")
        print(f"  {r['throughput']:,.0f} assignments/s   target >= {THROUGHPUT_TARGET:,.0f}   "
              f"ratio {r['throughput'] / THROUGHPUT_TARGET:.2f}x   ({r['load2']})")
        print(f"[reader={reader}] start-up to ready (bentoml serve -> /readyz 200): {r['startup_s']:.1f} s   "
              f"target <= {STARTUP_TARGET_S:.0f} s   ratio {r['startup_s'] / STARTUP_TARGET_S:.2f}x   ({r['load0']})")
        if "expand_p99" in r:
            print(f"[reader={reader}] /expand {args.seed_size:,}-customer seed, target_size={args.target_size:,}, "
                  f"{args.population:,} population, {r['expand_n']} requests ({r['expand_returned']:,} returned)")
            print(f"  p50 {r['expand_p50']:7.1f} ms   p99 {r['expand_p99']:7.1f} ms   target <= {EXPAND_P99_TARGET_MS:.0f} ms"
                  f"   ratio {r['expand_p99'] / EXPAND_P99_TARGET_MS:.2f}x   ({r['load3']})")
    return 0


def serve_and_measure(reader: str, bundle: Path, connection: str, ids: np.ndarray, args: argparse.Namespace,
                      workdir: Path) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "LOOKALIKE_FEATURE_REPO": str(Path(args.feature_repo).resolve()),
           "LOOKALIKE_ONLINE_STORE": "redis", "LOOKALIKE_REDIS_URL": connection,
           "LOOKALIKE_ONLINE_READER": reader,
           "MLFLOW_TRACKING_URI": args.tracking_uri, "LOOKALIKE_MODEL_ALIAS": args.model_alias,
           "LOOKALIKE_INDEX_DIR": str(bundle), "BENTOML_DO_NOT_TRACK": "True"}
    env.pop("LOOKALIKE_API_TOKEN", None)
    log_path = workdir / f"server-{reader}.log"
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("bentoml")), "serve", "serving.service:LookalikeService",
             "--host", "127.0.0.1", "--port", str(port)], cwd=REPO_ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, server, log_path)
            startup = {"startup_s": time.perf_counter() - started, "load0": load_average()}
            return {**run_http_phases(url, ids, args), **startup}
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_ready(url: str, server: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.time() + 600
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("server not ready in 600 s")


if __name__ == "__main__":
    raise SystemExit(main())
