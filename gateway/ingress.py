"""The replica's ASGI entry: the hot endpoints go straight to their handlers, everything else through FastAPI.

FastAPI's middleware stack, exception middleware and route matching cost a replica ~14 % of its samples on a
non-streamed call (BENCHMARKS.md); the four endpoints that carry the traffic skip them. They keep the same
handlers, the same error bodies and the same CORS policy (the CORS middleware then wraps this entry, not FastAPI).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.schema import ErrorKind, GatewayError

log = logging.getLogger("gateway.http")
Handler = Callable[[Request], Awaitable[Response]]
OnError = Callable[[Request, GatewayError], Response]


class Ingress:
    """Dispatches (method, path) of the hot routes to their handler; any other request to `fallback`."""

    def __init__(self, routes: dict[tuple[str, str], Handler], fallback: ASGIApp, on_error: OnError) -> None:
        self._routes, self._fallback, self._on_error = routes, fallback, on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._routes.get((scope.get("method", ""), _route_path(scope))) if scope["type"] == "http" else None
        if handler is None:
            await self._fallback(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except GatewayError as exc:
            response = self._on_error(request, exc)
        except Exception as exc:
            log.exception("unhandled error")
            response = self._on_error(
                request, GatewayError(ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}")
            )
        await response(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
