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
- assignments/s with batching: concurrent clients each sending ``--batch`` ids.

Bounded by ``--requests`` and ``--seconds``. Targets (2 cores): p99 <= 20 ms, >= 1,000
assignments/s. The 1-minute load average is printed with each figure (shared machine).
Example::

    python bench/bench_serving.py --feature-repo feature_repo --tracking-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import scipy.sparse as sp

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

P99_TARGET_MS = 20.0
THROUGHPUT_TARGET = 1_000.0


def synthetic_bundle(out_dir: Path, n_anchors: int, tracking_uri: str, model_alias: str, index_type: str) -> Path:
    import mlflow

    from index_builder import faiss_backend
    from index_builder.bundle import AssignmentSpec, write_bundle
    from training.artifact import load_registered_encoder

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    encoder, info = load_registered_encoder(tracking_uri, alias_or_version=model_alias)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n_anchors, encoder.embedding_dim)).astype(np.float32)
    built = faiss_backend.build_index(vectors, faiss_backend.IndexParams(type=index_type, device="cpu",
                                                                         recall_sample=200))
    n_segments = len(encoder.segments)
    rows = np.repeat(np.arange(n_anchors), 3)
    labels = sp.csr_matrix((np.ones(len(rows), np.uint8), (rows, rng.integers(0, n_segments, len(rows)))),
                           shape=(n_anchors, n_segments))
    labels.data[:] = 1
    assignment = AssignmentSpec(k=10, aggregation="weighted", segments=list(encoder.segments),
                                thresholds=[0.3] * n_segments, threshold_mode="fixed",
                                search_params=dict(built.params))
    # Synthetic anchor ids far above real customer ids: nobody is their own anchor.
    anchor_ids = np.arange(n_anchors, dtype=np.int64) + 10**12
    path = out_dir / "bench-1m"
    write_bundle(path, built, anchor_ids, labels, assignment, index_version="bench-1m", run_date="bench",
                 model_name=info.name, model_version=info.version,
                 feature_service=info.feature_service, feature_service_version=info.feature_service_version)
    print(f"  index {built.index_type} {built.params} recall@10 {built.recall_at_k}")
    return path


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    process = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.terminate()
    raise RuntimeError("redis-server did not start")


def load_average() -> str:
    return "load avg " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


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
    args = parser.parse_args()

    low, high = (int(x) for x in args.customer_ids.split("-"))
    ids = np.arange(low, high + 1)
    rng = np.random.default_rng(1)
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    started = time.perf_counter()
    bundle = synthetic_bundle(workdir, args.anchors, args.tracking_uri, args.model_alias, args.index_type)
    print(f"synthetic bundle: {args.anchors:,} anchors in {time.perf_counter() - started:.1f}s ({load_average()})")

    from lookalike.materialize import MaterializeConfig
    from lookalike.materialize import run as materialize

    redis_process, redis_port = start_redis(workdir)
    connection = f"127.0.0.1:{redis_port}"
    server: subprocess.Popen[bytes] | None = None
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    try:
        started = time.perf_counter()
        report = materialize(MaterializeConfig(repo=Path(args.feature_repo), online="redis", redis_connection=connection,
                                               start_date="1970-01-01", end_date=args.end_date))
        print(f"Redis online store: {report.rows:,} view rows in {time.perf_counter() - started:.1f}s")
        port = _free_port()
        env = {**os.environ, "LOOKALIKE_FEATURE_REPO": str(Path(args.feature_repo).resolve()),
               "LOOKALIKE_ONLINE_STORE": "redis", "LOOKALIKE_REDIS_URL": connection,
               "MLFLOW_TRACKING_URI": args.tracking_uri, "LOOKALIKE_MODEL_ALIAS": args.model_alias,
               "LOOKALIKE_INDEX_DIR": str(bundle), "BENTOML_DO_NOT_TRACK": "True"}
        env.pop("LOOKALIKE_API_TOKEN", None)
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("bentoml")), "serve", "serving.service:LookalikeService",
             "--host", "127.0.0.1", "--port", str(port)], cwd=REPO_ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, server, workdir / "server.log")
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in ids[:50]:  # warm-up
                client.post("/assign", json={"customer_ids": [int(i)]})
            latencies: list[float] = []
            deadline = time.perf_counter() + args.seconds
            while len(latencies) < args.requests and time.perf_counter() < deadline:
                cid = int(rng.choice(ids))
                t0 = time.perf_counter()
                response = client.post("/assign", json={"customer_ids": [cid]})
                latencies.append((time.perf_counter() - t0) * 1000)
                response.raise_for_status()
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        load_phase1 = load_average()

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
        throughput = done / (time.perf_counter() - t0)
        load_phase2 = load_average()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        log.close()
        redis_process.terminate()
        redis_process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)  # the 1M-anchor bundle is ~150 MB

    print(f"single-customer /assign, {len(latencies)} requests, {args.anchors:,} anchors, Redis online features")
    print(f"  p50 {p50:7.2f} ms")
    print(f"  p99 {p99:7.2f} ms   target <= {P99_TARGET_MS:.0f} ms   ratio {P99_TARGET_MS / p99:.2f}x   ({load_phase1})")
    print(f"batched /assign: {args.clients} clients x {args.batch} ids, {errors} errors")
    print(f"  {throughput:,.0f} assignments/s   target >= {THROUGHPUT_TARGET:,.0f}   "
          f"ratio {throughput / THROUGHPUT_TARGET:.2f}x   ({load_phase2})")
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        time.sleep(1)
    raise SystemExit("server not ready in 600 s")


if __name__ == "__main__":
    raise SystemExit(main())
