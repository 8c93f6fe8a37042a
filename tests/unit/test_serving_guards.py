"""Serving guards in isolation: batch isolation, body limit, redaction, OpenAPI, env, logs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from lookalike.redaction import redact
from serving.batching import MicroBatcher
from serving.config import ServingConfig, load_serving_config, warn_unknown_env
from serving.http_guards import BodyLimitMiddleware
from serving.log_limits import RepeatedErrorFilter
from serving.openapi import complete_spec, project_version

pytestmark = [pytest.mark.unit, pytest.mark.fault]


class StoreDown(Exception):
    pass


def test_one_bad_request_never_fails_the_others_in_its_batch() -> None:
    calls: list[list[int]] = []

    def process(ids: list[int]) -> tuple[str, list[int]]:
        calls.append(ids)
        if any(i < 0 for i in ids):
            raise OverflowError("bad id")
        return "v1", [i * 10 for i in ids]

    async def main() -> list[Any]:
        batcher: MicroBatcher[str, int] = MicroBatcher(process, max_batch_ids=1000, max_wait_ms=30,
                                                       shared_errors=(StoreDown,))
        return await asyncio.gather(*(batcher.submit([i] if i != 3 else [-1]) for i in range(8)),
                                    return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[3], OverflowError)
    assert [r for i, r in enumerate(results) if i != 3] == [("v1", [i * 10]) for i in range(8) if i != 3]
    assert len(calls[0]) == 8  # they did share a batch


def test_shared_errors_fail_the_batch_once() -> None:
    calls = 0

    def process(ids: list[int]) -> tuple[str, list[int]]:
        nonlocal calls
        calls += 1
        raise StoreDown("down")

    async def main() -> list[Any]:
        batcher: MicroBatcher[str, int] = MicroBatcher(process, max_wait_ms=30, shared_errors=(StoreDown,))
        return await asyncio.gather(*(batcher.submit([i]) for i in range(5)), return_exceptions=True)

    assert all(isinstance(r, StoreDown) for r in asyncio.run(main()))
    assert calls == 1  # no per-request retries against a store that is down


def _echo_app(limit: int) -> TestClient:
    read: list[int] = []

    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        read.append(len(body))
        return JSONResponse({"bytes": len(body)})

    app = Starlette(routes=[Route("/x", echo, methods=["POST"])])
    app.add_middleware(BodyLimitMiddleware, limit=lambda: limit)
    client = TestClient(app)
    client.read = read  # type: ignore[attr-defined]
    return client


def test_body_over_the_limit_is_413_before_the_app_reads_it() -> None:
    client = _echo_app(1024)
    assert client.post("/x", content=b"x" * 1024).json() == {"bytes": 1024}
    big = client.post("/x", content=b"[" + b"1," * 5_000_000 + b"1]")
    assert big.status_code == 413 and "too large" in big.json()["error"]

    def chunks() -> Any:
        for _ in range(100):
            yield b"y" * 100

    chunked = client.post("/x", content=chunks())  # no Content-Length: counted while read
    assert chunked.status_code == 413
    assert client.post("/x", content=iter([b"a" * 10, b"b" * 10])).json() == {"bytes": 20}
    assert client.read == [1024, 20]  # type: ignore[attr-defined]


@pytest.mark.parametrize("raw, shown", [
    ("postgresql://etl:s3cret@db:5432/mlflow", "postgresql://etl:***@db:5432/mlflow"),
    ("10.0.0.5:6379,db=2,password=s3cret", "10.0.0.5:6379,db=2,password=***"),
    ("https://store/x?sig=abc&id=1", "https://store/x?sig=***&id=1"),
    ("https://tok3n@host/x", "https://***@host/x"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
])
def test_credentials_are_redacted(raw: str, shown: str) -> None:
    assert redact(raw) == shown


def test_describe_never_shows_secrets() -> None:
    config = ServingConfig(tracking_uri="https://u:s3cret@mlflow.example/", api_token="t0ken",
                           redis_connection="r:6379,password=hunter2")
    text = str(config.describe())
    assert "s3cret" not in text and "t0ken" not in text and "hunter2" not in text
    assert config.describe()["admin"] == "token"
    assert ServingConfig().describe()["admin"] == "disabled"
    assert ServingConfig(allow_insecure_admin=True).describe()["admin"] == "insecure-local"


def test_unknown_lookalike_env_vars_warn(caplog: pytest.LogCaptureFixture) -> None:
    env = {"LOOKALIKE_API_TOKN": "x", "LOOKALIKE_K": "7", "LOOKALIKE_DATA_DIR": "/d", "OTHER": "1"}
    with caplog.at_level(logging.WARNING, logger="serving.config"):
        config = load_serving_config(env)
    assert config.k == 7
    assert warn_unknown_env(env) == ["LOOKALIKE_API_TOKN"]
    assert "LOOKALIKE_API_TOKN" in caplog.text and "did you mean LOOKALIKE_API_TOKEN" in caplog.text
    assert load_serving_config({"LOOKALIKE_INSECURE_LOCAL_ADMIN": "1",
                                "LOOKALIKE_MAX_BODY_BYTES": "4096"}).allow_insecure_admin


def test_openapi_document_is_complete() -> None:
    spec = complete_spec({"info": {"title": "lookalike", "version": "None"}, "paths": {
        "/assign": {"post": {"responses": {"200": {"description": "ok"}, "500": {"description": "x"}}}},
        "/readyz": {"get": {"responses": {}}}}})
    assert spec["info"]["title"] == "Lookalike segmentation API"
    assert spec["info"]["version"] == project_version() != "None"
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["bearerAuth"]
        ["description"]}
    for path in ("/assign", "/expand", "/metadata", "/admin/reload"):
        operation = next(iter(spec["paths"][path].values()))
        assert operation["responses"]["200"]["content"]["application/json"]["example"], path
        assert "500" not in operation["responses"]
    assign = spec["paths"]["/assign"]["post"]
    assert {"400", "401", "413", "422", "503"} <= set(assign["responses"])
    assert assign["requestBody"]["content"]["application/json"]["example"] == {"customer_ids": [1, 2, 3]}
    assert spec["paths"]["/readyz"]["get"]["security"] == []


def test_repeated_tracebacks_are_rate_limited() -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("test.repeated")
    logger.addHandler(handler)
    logger.addFilter(RepeatedErrorFilter(interval_s=60))
    try:
        for _ in range(500):
            try:
                raise ConnectionError("store gone")
            except ConnectionError:
                logger.exception("read failed")
        logger.warning("something else")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["read failed", "something else"]
