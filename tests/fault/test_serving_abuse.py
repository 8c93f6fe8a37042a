"""Fault suite, serving: the issue's hostile-input and outage probes against the real
service in-process (trained model, index bundle, a private copy of the materialized SQLite
online store). Redis restart and reload under load, over HTTP: tests/e2e/test_serving_http.py."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.fault.test_privacy_probe import serving_refuses, tampered_repo
from tests.integration.test_serving_inprocess import TOKEN, pick_population, serving_env

pytestmark = [pytest.mark.fault, pytest.mark.integration]

TOO_BIG_ID = 2**63 + 12_345  # not a substring of the int64 bounds quoted in the 400


@pytest.fixture(scope="module")
def private_repo(materialized_repo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the materialized repo: its SQLite online store is ours to damage."""
    repo = tmp_path_factory.mktemp("abuse") / "feature_repo"
    shutil.copytree(materialized_repo_dir, repo)
    return repo


@pytest.fixture(scope="module")
def client(trained_model: Any, index_bundle_dir: Path, private_repo: Path, service_asgi_app: Any) -> Iterator[Any]:
    from starlette.testclient import TestClient

    env = serving_env(trained_model, index_bundle_dir, private_repo)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with TestClient(service_asgi_app) as test_client:
            test_client.headers["Authorization"] = f"Bearer {TOKEN}"
            yield test_client
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def service() -> Any:
    from _bentoml_sdk.service import get_current_service

    return get_current_service()


@pytest.fixture(scope="module")
def known_ids(client: Any) -> list[int]:
    return pick_population(service().runtime).non_opt_in[:20]


def test_ids_beyond_int64_are_400_and_never_fail_other_requests(client: Any, known_ids: list[int]) -> None:
    for body in ({"customer_ids": [TOO_BIG_ID]}, {"customer_ids": [-TOO_BIG_ID]},
                 {"seed_customer_ids": [TOO_BIG_ID] * 6}):
        path = "/assign" if "customer_ids" in body else "/expand"
        response = client.post(path, json=body)
        assert response.status_code == 400, (path, response.text)
        assert str(TOO_BIG_ID) not in response.text  # input never echoed

    def call(i: int) -> int:
        ids = [TOO_BIG_ID] if i % 5 == 0 else [known_ids[i % len(known_ids)]]
        return int(client.post("/assign", json={"customer_ids": ids}).status_code)

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(call, range(200)))
    assert [c for i, c in enumerate(codes) if i % 5] == [200] * 160
    assert {c for i, c in enumerate(codes) if i % 5 == 0} == {400}


def test_large_bodies_get_413_before_parsing(client: Any) -> None:
    limit = service().config.max_body_bytes
    big = b'{"customer_ids": [' + b"1," * (10 * 1024 * 1024 // 2) + b'1]}'
    response = client.post("/assign", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and f"{limit:,}" in response.json()["error"]

    def chunked() -> Iterator[bytes]:
        yield b'{"customer_ids": ['
        for _ in range(2_000):
            yield b"1," * 500
        yield b"1]}"

    response = client.post("/expand", content=chunked(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_seed_cap_and_expand_time_budget(client: Any, known_ids: list[int]) -> None:
    config = service().config
    started = time.perf_counter()
    response = client.post("/expand", json={"seed_customer_ids": list(range(1, 20_002))})
    assert response.status_code == 422 and "seed too large" in response.json()["error"]
    assert time.perf_counter() - started < 5
    budget = config.expand.time_budget_s
    config.expand.time_budget_s = 1e-4
    try:
        response = client.post("/expand", json={"seed_customer_ids": known_ids})
    finally:
        config.expand.time_budget_s = budget
    assert response.status_code == 503 and "time budget" in response.json()["error"]


def test_truncated_sqlite_store_is_503_then_recovers_without_reload(client: Any, known_ids: list[int],
                                                                    private_repo: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    online = private_repo / "data" / "online_store.db"
    saved = online.read_bytes()
    body = {"customer_ids": known_ids[:3]}
    assert client.post("/assign", json=body).status_code == 200
    before = service().runtime
    with caplog.at_level(logging.WARNING):
        with open(online, "r+b") as handle:
            handle.truncate(0)
        codes = [client.post("/assign", json=body) for _ in range(40)]
        assert {r.status_code for r in codes} == {503}, {r.status_code for r in codes}
        assert all("online feature store unavailable" in r.json()["error"] for r in codes)
        assert str(online) not in codes[0].text
        expand = client.post("/expand", json={"seed_customer_ids": known_ids})
        assert expand.status_code == 503
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert 1 <= len(tracebacks) <= 3, len(tracebacks)  # rate-limited, not one per request

    with open(online, "r+b") as handle:
        handle.write(saved)
    deadline = time.time() + 10
    while time.time() < deadline:
        response = client.post("/assign", json=body)
        if response.status_code == 200:
            break
        time.sleep(0.3)
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["ok"] * 3
    assert service().runtime is before  # recovered in place, no /admin/reload


def test_readyz_flood_costs_at_most_one_store_read_per_second(client: Any) -> None:
    runtime = service().runtime
    reads = 0
    lock = threading.Lock()
    original = runtime.reader.read_with_status

    def counting(ids: Any) -> Any:
        nonlocal reads
        with lock:
            reads += 1
        return original(ids)

    runtime.reader.read_with_status = counting
    stop = time.monotonic() + 2.0

    def flood() -> int:
        n = 0
        while time.monotonic() < stop:
            assert client.get("/readyz", headers={"Authorization": ""}).status_code == 200
            n += 1
        return n

    try:
        with ThreadPoolExecutor(16) as pool:
            probes = sum(pool.map(lambda _: flood(), range(16)))
    finally:
        del runtime.reader.read_with_status
    assert probes > 50
    assert reads <= 3, (reads, probes)


def test_reload_refused_without_token_unless_insecure_local(client: Any) -> None:
    config = service().config
    token = config.api_token
    config.api_token = None
    try:
        response = client.post("/admin/reload", headers={"Authorization": ""})
        assert response.status_code == 403 and "LOOKALIKE_API_TOKEN" in response.json()["error"]
        config.allow_insecure_admin = True
        assert client.post("/admin/reload", headers={"Authorization": ""}).status_code == 200
    finally:
        config.api_token = token
        config.allow_insecure_admin = False


def test_metadata_redacts_credentials(client: Any) -> None:
    config = service().config
    saved = config.redis_connection, config.tracking_uri
    config.redis_connection = "10.1.2.3:6379,password=hunter2"
    config.tracking_uri = "https://etl:s3cret@mlflow.example.com"
    try:
        text = client.get("/metadata").text
    finally:
        config.redis_connection, config.tracking_uri = saved
    assert "hunter2" not in text and "s3cret" not in text and TOKEN not in text
    assert "password=***" in text and "etl:***@" in text


def test_openapi_document_for_clients(client: Any) -> None:
    spec = client.get("/docs.json", headers={"Authorization": ""}).json()
    assert spec["info"]["title"] == "Lookalike segmentation API" and spec["info"]["version"] != "None"
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path in ("/assign", "/expand"):
        operation = spec["paths"][path]["post"]
        assert {"200", "401", "413", "422", "503"} <= set(operation["responses"])
        assert operation["requestBody"]["content"]["application/json"]["example"]


def test_serving_start_up_refuses_a_lying_registry(client: Any, trained_model: Any, index_bundle_dir: Path,
                                                   feature_tables_dir: Path, tmp_path: Path) -> None:
    message = serving_refuses(tampered_repo(tmp_path / "repo", feature_tables_dir), trained_model, index_bundle_dir)
    assert "web_navigation (" in message and "pii=yes" in message
