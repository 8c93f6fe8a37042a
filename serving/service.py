"""BentoML service: segment assignment and seed expansion from online features.

Run from the repository root::

    LOOKALIKE_FEATURE_REPO=feature_repo MLFLOW_TRACKING_URI=sqlite:///mlflow.db \\
    LOOKALIKE_API_TOKEN=change-me bentoml serve serving.service:LookalikeService --port 3000

Endpoints (JSON): ``POST /assign``, ``POST /expand`` (BentoML APIs, pydantic schemas in
:mod:`serving.models`), ``GET /metadata`` and ``POST /admin/reload`` (FastAPI routes on
the same service), ``GET /healthz`` (alive), ``GET /readyz`` (model + index loaded and the
online store answers; 503 otherwise; answered from a probe at most ``readiness_cache_s``
old). With ``LOOKALIKE_API_TOKEN`` set every route except the probes and ``/docs.json``
needs ``Authorization: Bearer <token>``; without one, ``/admin/reload`` is refused (403)
unless ``LOOKALIKE_INSECURE_LOCAL_ADMIN=1``. Bodies over ``max_body_bytes`` get 413 before
parsing (:mod:`serving.http_guards`); every online-store failure is a 503 and the store is
reopened on the next request; repeated tracebacks are rate-limited (:mod:`serving.log_limits`).
The OpenAPI document (``/docs.json``) is completed by :mod:`serving.openapi`.

One worker process: a reload swaps the runtime of the process that received it, so more
workers would serve different versions until each was reloaded.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any

import anyio
import bentoml
from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from lookalike.errors import LookalikeError
from serving import log_limits
from serving.batching import MicroBatcher
from serving.config import ServingConfig, load_serving_config
from serving.core import (
    BudgetExceededError,
    InvalidRequestError,
    LookalikeRuntime,
    SeedRejectedError,
    StoreUnavailableError,
    limit_intra_op_threads,
)
from serving.http_guards import BodyLimitMiddleware
from serving.models import (
    AssignRequest,
    AssignResponse,
    CustomerAssignment,
    ExpandRequest,
    ExpandResponse,
    Versions,
)
from serving.openapi import DOCS_PATH, OpenAPIMiddleware
from serving.responses import expand_response

log = logging.getLogger("lookalike.serving")

# Liveness/readiness probes stay open: orchestrators call them without credentials.
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", DOCS_PATH})


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class BearerAuthMiddleware:
    """Rejects requests without the configured bearer token (401); never echoes it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        token = _configured_token()
        if token is not None:
            headers = dict(scope.get("headers") or [])
            supplied = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, credential = supplied.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), token.encode()):
                response = JSONResponse(
                    {"error": "missing or invalid bearer token"}, status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _current_config() -> ServingConfig:
    from _bentoml_sdk.service import get_current_service

    try:
        service = get_current_service()
    except Exception:  # noqa: BLE001 - not instantiated yet: fall back to the environment
        return load_serving_config()
    return service.config  # type: ignore[no-any-return]


def _configured_token() -> str | None:
    return _current_config().api_token


def _body_limit() -> int:
    return _current_config().max_body_bytes


ops = FastAPI(title="lookalike operations", openapi_url=None, docs_url=None, redoc_url=None)


@bentoml.service(name="lookalike", workers=1, traffic={"timeout": 120})
@bentoml.asgi_app(ops, path="/")
class LookalikeService:
    """Loads the champion model, its index bundle and the Feast store once per process."""

    def __init__(self, config: ServingConfig | None = None) -> None:
        log_limits.install()
        self.config = config or load_serving_config()
        log.info("starting lookalike service with %s", self.config.describe())
        if self.config.api_token is None:
            log.warning("LOOKALIKE_API_TOKEN is not set: the API is open to anyone who can reach it; "
                        "/admin/reload is %s", "enabled (insecure-local)" if self.config.allow_insecure_admin
                        else "disabled")
        limit_intra_op_threads(self.config.intra_op_threads)
        # Refuses to start (raises) when model, bundle and registry disagree.
        self._runtime = LookalikeRuntime.load(self.config)
        self._reload_lock = asyncio.Lock()
        self._batcher: MicroBatcher[Versions, CustomerAssignment] = MicroBatcher(
            self._assign_batch, self.config.batch_max_ids, self.config.batch_max_wait_ms,
            shared_errors=(StoreUnavailableError,),
        )

    @property
    def runtime(self) -> LookalikeRuntime:
        return self._runtime

    def _assign_batch(self, ids: list[int]) -> tuple[Versions, list[CustomerAssignment]]:
        # One reference read per batch: the whole batch is answered by one model/index pair.
        return self._runtime.assign(ids)

    def __is_ready__(self) -> bool:
        return self._runtime.is_ready()

    @bentoml.api(route="/assign", input_spec=AssignRequest)
    async def assign(self, customer_ids: list[int]) -> AssignResponse:
        """Segments for each customer: explicit for opt-in, lookalike for the others."""
        limit = self.config.max_ids_per_request
        if len(customer_ids) > limit:
            return error(422, f"too many customer_ids: {len(customer_ids)} (maximum {limit} per request)")  # type: ignore[return-value]
        try:
            versions, results = await self._batcher.submit(list(customer_ids))
        except StoreUnavailableError as exc:
            return error(503, str(exc))  # type: ignore[return-value]
        except InvalidRequestError as exc:
            return error(422, str(exc))  # type: ignore[return-value]
        return AssignResponse(versions=versions, results=results)

    @bentoml.api(route="/expand", input_spec=ExpandRequest)
    async def expand(self, **request: Any) -> ExpandResponse:
        """Rank lookalikes of a seed audience; the reach/similarity dial is target_size/min_similarity."""
        body = ExpandRequest(**request)
        if body.target_size is not None and body.target_size > self.config.expand.max_target_size:
            return error(  # type: ignore[return-value]
                422, f"target_size {body.target_size} exceeds the maximum {self.config.expand.max_target_size}"
            )
        max_seed = self.config.expand.max_seed_ids
        if body.seed_customer_ids is not None and len(body.seed_customer_ids) > max_seed:
            return error(  # type: ignore[return-value]
                422, f"seed too large: {len(body.seed_customer_ids)} seed_customer_ids (maximum {max_seed})"
            )
        runtime = self._runtime
        # The budget starts now: waiting for a worker thread counts against it too.
        deadline = time.monotonic() + self.config.expand.time_budget_s
        try:
            result = await anyio.to_thread.run_sync(
                lambda: runtime.expand(
                    seed_ids=body.seed_customer_ids, seed_segment=body.seed_segment,
                    target_size=body.target_size, min_similarity=body.min_similarity,
                    population=body.population, exclude_seed=body.exclude_seed, deadline=deadline,
                )
            )
        except (SeedRejectedError, InvalidRequestError) as exc:
            return error(422, str(exc))  # type: ignore[return-value]
        except (StoreUnavailableError, BudgetExceededError) as exc:
            return error(503, str(exc))  # type: ignore[return-value]
        # Pre-serialised (the ExpandResponse shape, validated in tests): 100,000 response
        # objects cost more than the ranking.
        return expand_response(  # type: ignore[return-value]
            runtime.versions, result.seed, result.population, result.population_size,
            result.customer_ids, result.scores,
        )

    @ops.get("/metadata")
    def metadata(self) -> dict[str, Any]:
        runtime = self._runtime
        return {**runtime.metadata, "k": runtime.k, "aggregation": runtime.aggregation,
                "segments": len(runtime.segments), "config": self.config.describe()}

    @ops.post("/admin/reload")
    async def reload(self) -> JSONResponse:
        """Build a complete runtime for the current champion, then swap one reference."""
        if self.config.api_token is None and not self.config.allow_insecure_admin:
            return error(403, "admin endpoints are disabled: set LOOKALIKE_API_TOKEN "
                              "(or LOOKALIKE_INSECURE_LOCAL_ADMIN=1 on a development machine)")
        if self._reload_lock.locked():
            return error(409, "a reload is already in progress")
        async with self._reload_lock:
            previous = self._runtime.versions
            try:
                fresh = await anyio.to_thread.run_sync(LookalikeRuntime.load, self.config)
            except LookalikeError as exc:
                log.warning("reload refused, keeping model %s: %s", previous.model_version, exc)
                return error(409, f"reload refused, still serving the previous version: {exc}")
            self._runtime = fresh
        log.info("reloaded: model %s -> %s, index %s -> %s", previous.model_version,
                 fresh.versions.model_version, previous.index_version, fresh.versions.index_version)
        return JSONResponse({"reloaded": True, "previous": previous.model_dump(),
                             "current": fresh.versions.model_dump()})


LookalikeService.add_asgi_middleware(BearerAuthMiddleware)  # type: ignore[attr-defined]
LookalikeService.add_asgi_middleware(BodyLimitMiddleware, limit=_body_limit)  # type: ignore[attr-defined]
LookalikeService.add_asgi_middleware(  # type: ignore[attr-defined]
    OpenAPIMiddleware, spec=lambda: LookalikeService.openapi_spec.asdict(),  # type: ignore[attr-defined]
)
