"""The service as deployed: a real ``bentoml serve`` subprocess over HTTP, Redis online store.

One module-scoped server. Redis is stopped and restarted mid-test (same port): ``/assign``
must answer 503 with a clear message while it is down and recover without a restart. A
reload under concurrent traffic must not fail a single request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lookalike.local_redis import free_port
from tests.conftest import REPO_ROOT
from tests.fixtures.data import RUN_DATE
from tests.fixtures.feast import apply_repo
from tests.integration.test_serving_inprocess import EXAMPLE_REQUEST, TOKEN, UNKNOWN_ID, serving_env

BENTOML = Path(sys.executable).with_name("bentoml")
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# A Redis database of its own: other tests write synthetic rows into other dbs of the same server.
REDIS_DB = 6
# Redis runs without persistence in tests: after a restart the features are loaded again
# from this date on (a production Redis keeps them across restarts).
RELOAD_START_DATE = "2026-11-01"


def materialize_into_redis(repo: Path, start_date: str | None = None) -> int:
    from lookalike.materialize import MaterializeConfig, run

    return run(MaterializeConfig(repo=repo, end_date=RUN_DATE, start_date=start_date)).rows


@pytest.fixture(scope="module")
def redis_repo_dir(feature_tables_dir: Path, redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture feature tables applied with a Redis online store and materialized into it."""
    repo = apply_repo(tmp_path_factory.mktemp("serving_redis") / "feature_repo", feature_tables_dir,
                      online="redis", redis_connection=f"{redis_server.connection_string},db={REDIS_DB}")
    assert materialize_into_redis(repo) > 0
    return repo


@pytest.fixture(scope="module")
def server(trained_model: Any, index_bundle_dir: Path, redis_repo_dir: Path, redis_server: Any,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("bentoml") / "server.log"
    env = {**os.environ, **serving_env(trained_model, index_bundle_dir, redis_repo_dir),
           "BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(log_path.parent / "home")}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(BENTOML), "serve", "serving.service:LookalikeService", "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 240
            while time.time() < deadline:
                if process.poll() is not None:
                    pytest.fail(f"bentoml serve exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            else:
                pytest.fail(f"bentoml serve not ready in time:\n{log_path.read_text()[-3000:]}")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    server_log = log_path.read_text()
    assert TOKEN not in server_log  # never logged


def _population(url: str) -> dict[str, Any]:
    """Pick ids through the API itself: unknown/suppressed/opt-in statuses come back per item."""
    ids = list(range(1, 400))
    results = httpx.post(f"{url}/assign", json={"customer_ids": ids}, headers=AUTH, timeout=60).json()["results"]
    by_status: dict[str, list[int]] = {}
    for r in results:
        key = r["source"] if r["status"] == "ok" else r["status"]
        by_status.setdefault(key, []).append(r["customer_id"])
    return by_status


def results_of(url: str, ids: list[int]) -> list[dict[str, Any]]:
    response = httpx.post(f"{url}/assign", json={"customer_ids": ids}, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


@pytest.mark.e2e
def test_endpoints_auth_and_statuses(server: str) -> None:
    assert httpx.get(f"{server}/healthz").status_code == 200
    assert httpx.get(f"{server}/readyz").status_code == 200
    assert httpx.get(f"{server}/metadata").status_code == 401
    assert httpx.post(f"{server}/assign", json={"customer_ids": [1]}).status_code == 401
    meta = httpx.get(f"{server}/metadata", headers=AUTH).json()
    assert meta["model_version"] and meta["index_version"] and meta["feature_service_version"]

    example = json.loads(EXAMPLE_REQUEST.read_text())
    response = httpx.post(f"{server}/assign", json=example["assign"], headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text

    groups = _population(server)
    assert groups.get("lookalike") and groups.get("opt_in") and groups.get("suppressed"), groups.keys()
    ids = [groups["lookalike"][0], groups["opt_in"][0], groups["suppressed"][0], UNKNOWN_ID]
    results = httpx.post(f"{server}/assign", json={"customer_ids": ids}, headers=AUTH, timeout=30).json()["results"]
    assert [r["status"] for r in results] == ["ok", "ok", "suppressed", "unknown_customer"]
    assert [r["source"] for r in results[:2]] == ["lookalike", "opt_in"]

    bad = httpx.post(f"{server}/assign", content=b"[1,", headers={**AUTH, "Content-Type": "application/json"})
    assert bad.status_code == 400
    too_many = httpx.post(f"{server}/assign", json={"customer_ids": list(range(2000))}, headers=AUTH)
    assert too_many.status_code == 422 and "maximum" in too_many.json()["error"]

    # Seed by segment: the segments the opt-in customers hold, most common first; a large
    # segment may still be refused as too generic for this model, never for another reason.
    held = Counter(s["segment"] for r in results_of(server, groups["opt_in"]) for s in r["segments"])
    refused = []
    for segment, _ in held.most_common(5):
        expand = httpx.post(f"{server}/expand", json={**example["expand"], "seed_segment": segment,
                                                       "target_size": 10}, headers=AUTH, timeout=60)
        if expand.status_code != 422:
            break
        refused.append(expand.json()["error"])
    assert all("too generic" in message for message in refused), refused
    assert expand.status_code == 200, (expand.text, refused)
    lookalikes = [c["customer_id"] for c in expand.json()["customers"]]
    assert len(lookalikes) == 10
    assert not set(lookalikes) & set(groups["opt_in"])  # default population: non opt-in only
    tiny = httpx.post(f"{server}/expand", json={"seed_customer_ids": [UNKNOWN_ID]}, headers=AUTH)
    assert tiny.status_code == 422 and "too small" in tiny.json()["error"]


@pytest.mark.e2e
def test_redis_outage_gives_503_then_recovers(server: str, redis_server: Any, redis_repo_dir: Path) -> None:
    known = _population(server)["lookalike"][:3]
    body = {"customer_ids": known}
    assert httpx.post(f"{server}/assign", json=body, headers=AUTH, timeout=30).status_code == 200
    redis_server.stop()
    try:
        down = httpx.post(f"{server}/assign", json=body, headers=AUTH, timeout=60)
        assert down.status_code == 503, down.text
        assert "online feature store unavailable" in down.json()["error"]
        assert str(redis_server.port) not in down.text  # no connection details leak out
        assert httpx.get(f"{server}/readyz", timeout=30).status_code == 503
        assert httpx.get(f"{server}/healthz", timeout=10).status_code == 200
    finally:
        redis_server.start()
        materialize_into_redis(redis_repo_dir, start_date=RELOAD_START_DATE)
    # Same server process, no restart: the next requests reconnect on their own.
    deadline = time.time() + 30
    while time.time() < deadline:
        response = httpx.post(f"{server}/assign", json=body, headers=AUTH, timeout=30)
        if response.status_code == 200:
            break
        time.sleep(0.5)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["ok"] * len(known)
    assert all(r["source"] == "lookalike" for r in results)
    assert httpx.get(f"{server}/readyz", timeout=30).status_code == 200


@pytest.mark.e2e
@pytest.mark.fault
def test_redis_restart_under_load_is_503_never_500(server: str, redis_server: Any, redis_repo_dir: Path) -> None:
    known = _population(server)["lookalike"][:5]
    codes: Counter[int] = Counter()
    stop = threading.Event()
    lock = threading.Lock()

    def hammer(offset: int) -> None:
        with httpx.Client(base_url=server, headers=AUTH, timeout=60) as client:
            i = offset
            while not stop.is_set():
                i += 1
                response = client.post("/assign", json={"customer_ids": [known[i % len(known)]]})
                with lock:
                    codes[response.status_code] += 1
                if response.status_code not in (200, 503):
                    stop.set()

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        redis_server.stop()
        time.sleep(1.5)
        redis_server.start()
        materialize_into_redis(redis_repo_dir, start_date=RELOAD_START_DATE)
        time.sleep(1.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert set(codes) <= {200, 503}, codes
    assert codes[503] > 0 and codes[200] > 0, codes
    after = httpx.post(f"{server}/assign", json={"customer_ids": known}, headers=AUTH, timeout=30)
    assert after.status_code == 200 and [r["source"] for r in after.json()["results"]] == ["lookalike"] * 5


@pytest.mark.e2e
@pytest.mark.fault
def test_reload_under_concurrent_requests_has_zero_failures(server: str) -> None:
    failures: list[str] = []
    completed = 0
    stop = threading.Event()
    lock = threading.Lock()

    def hammer() -> None:
        nonlocal completed
        with httpx.Client(base_url=server, headers=AUTH, timeout=60) as client:
            i = 0
            while not stop.is_set():
                i += 1
                response = client.post("/assign", json={"customer_ids": [i % 300 + 1, i % 17 + 1]})
                with lock:
                    completed += 1
                    if response.status_code != 200:
                        failures.append(f"{response.status_code}: {response.text[:200]}")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    reload = httpx.post(f"{server}/admin/reload", headers=AUTH, timeout=300)
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert reload.status_code == 200, reload.text
    assert completed > 10
    assert failures == []
