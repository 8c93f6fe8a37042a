"""ASGI guards that act before a request body is parsed.

:class:`BodyLimitMiddleware` answers 413 to bodies over ``max_body_bytes``: at once from a
``Content-Length`` header, or, for chunked bodies, as soon as the bytes read pass the
limit (at most ``limit`` bytes are ever held). A 200 MB body therefore costs neither
parsing nor memory, whatever the endpoint's own limits (ids per request) would say later.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def too_large(limit: int) -> JSONResponse:
    return JSONResponse({"error": f"request body too large (maximum {limit:,} bytes)"}, status_code=413)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = limit + 1
            if size > limit:
                await too_large(limit)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # No length announced (chunked): read up to the limit, then replay what was read.
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            body = message.get("body", b"")
            total += len(body)
            if total > limit:
                await too_large(limit)(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}],
                                      receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
