"""The service's OpenAPI document as clients need it (served at ``/docs.json``).

BentoML 1.4 generates the document from the service and offers no hook to extend it (its
``info.version`` is the Bento tag, ``"None"`` outside a built Bento), so
:class:`OpenAPIMiddleware` answers ``GET /docs.json`` with BentoML's own document completed
by :func:`complete_spec`: project title and version, a bearer security scheme, an example
request and response on every endpoint, and every error response (400/401/403/409/413/422/
503) with the ``{"error": ...}`` body all of them share.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

DOCS_PATH = "/docs.json"
TITLE = "Lookalike segmentation API"
EXAMPLES = json.loads((Path(__file__).with_name("example_request.json")).read_text())
ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}},
                "example": {"error": "one line naming the problem"}}
ERRORS = {
    "400": "Malformed JSON or a body that does not match the schema (e.g. an id outside int64).",
    "401": "Missing or invalid bearer token (when the server has LOOKALIKE_API_TOKEN set).",
    "403": "Admin endpoint disabled: the server has no token and no insecure-local setting.",
    "409": "A reload is already running, or the new version was refused (the old one keeps serving).",
    "413": "Request body larger than the server's max_body_bytes; refused before parsing.",
    "422": "Valid JSON but an unusable request: too many ids, seed too large, small or generic, unknown segment.",
    "503": "Online feature store unavailable, not ready, or the request ran past its time budget; retry later.",
}
VERSIONS_EXAMPLE = {"model_name": "lookalike-two-tower", "model_version": "3", "index_version": "2026-11-22-m3",
                    "feature_service": "lookalike_legit_v1", "feature_service_version": "1"}
# per path: (method, request example, response example, error codes)
ENDPOINTS: dict[str, tuple[str, Any, Any, tuple[str, ...]]] = {
    "/assign": ("post", EXAMPLES["assign"], {
        "versions": VERSIONS_EXAMPLE,
        "results": [{"customer_id": 1, "status": "ok", "source": "lookalike",
                     "segments": [{"segment": "S07", "name": "sports fans", "score": 0.62}],
                     "evidence": {"neighbours": 40, "mean_similarity": 0.91}},
                    {"customer_id": 2, "status": "unknown_customer", "source": None, "segments": [],
                     "evidence": None}]},
        ("400", "401", "413", "422", "503")),
    "/expand": ("post", EXAMPLES["expand"], {
        "versions": VERSIONS_EXAMPLE,
        "seed": {"requested": 412, "matched": 405, "unknown": 7, "suppressed": 0, "distinctiveness": 8.7,
                 "centroid_distance": 0.12, "mean_intra_seed_similarity": 0.41, "population_mean_similarity": 0.18},
        "population": "non_opt_in", "population_size": 13000,
        "customers": [{"customer_id": 18342, "score": 0.93}, {"customer_id": 771, "score": 0.92}]},
        ("400", "401", "413", "422", "503")),
    "/metadata": ("get", None, {**VERSIONS_EXAMPLE, "k": 40, "aggregation": "weighted", "segments": 60},
                  ("401",)),
    "/admin/reload": ("post", None, {"reloaded": True, "previous": VERSIONS_EXAMPLE, "current": VERSIONS_EXAMPLE},
                      ("401", "403", "409")),
}
OPEN_ENDPOINTS = ("/healthz", "/livez", "/readyz")


def project_version() -> str:
    try:
        return metadata.version("lookalike")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def complete_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """BentoML's document with title/version, bearer auth, examples and error responses."""
    spec = json.loads(json.dumps(spec))
    info = spec.setdefault("info", {})
    info.update({"title": TITLE, "version": project_version()})
    info.pop("contact", None)
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http", "scheme": "bearer",
        "description": "LOOKALIKE_API_TOKEN of the server; every route but the probes needs it when set."}
    components.setdefault("schemas", {})["ErrorBody"] = ERROR_SCHEMA
    spec["security"] = [{"bearerAuth": []}]
    paths = spec.setdefault("paths", {})
    for path, (method, request, response, errors) in ENDPOINTS.items():
        operation = paths.setdefault(path, {}).setdefault(method, {"responses": {}})
        if request is not None:
            content = operation.setdefault("requestBody", {}).setdefault("content", {})
            content.setdefault("application/json", {}).setdefault("schema", {})
            content["application/json"]["example"] = request
        ok = operation.setdefault("responses", {}).setdefault("200", {"description": "Successful Response"})
        ok.setdefault("content", {}).setdefault("application/json", {})["example"] = response
        responses = operation["responses"]
        for code in [c for c in list(responses) if c not in ("200", *errors)]:
            del responses[code]  # BentoML's generic 400/404/500 entries, replaced below
        for code in errors:
            responses[code] = {"description": ERRORS[code], "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ErrorBody"}, "example": {"error": ERRORS[code]}}}}
    for path in OPEN_ENDPOINTS:
        for operation in paths.get(path, {}).values():
            if isinstance(operation, dict):
                operation["security"] = []  # probes stay open for orchestrators
                operation.setdefault("responses", {}).setdefault("200", {"description": "OK"})
                if path == "/readyz":
                    operation["responses"]["503"] = {"description": "Not ready: the online store does not answer."}
    return spec


class OpenAPIMiddleware:
    """Serves ``complete_spec(spec())`` at ``GET /docs.json``."""

    def __init__(self, app: ASGIApp, spec: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.spec = spec
        self._cached: dict[str, Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == DOCS_PATH and scope.get("method") in ("GET", "HEAD"):
            if self._cached is None:
                self._cached = complete_spec(self.spec())
            await JSONResponse(self._cached)(scope, receive, send)
            return
        await self.app(scope, receive, send)
