"""The official SDKs' clients as the HTTP layer: POST a JSON body, get the JSON back or an open SSE stream.

The SDK does the HTTP: base URL, auth headers, timeouts, connection pool (its aiohttp
transport) and its status-error classes, which the provider's mapper classifies. Bodies are
parsed from the wire JSON rather than through the SDK's typed models, which measured at
~0.4 ms per request (param transform) and ~0.13 ms per streamed chunk here (BENCHMARKS.md §4);
reading the raw stream also lets an adapter check the terminal marker itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import Any

import aiohttp
import httpx2

from gateway.config import ProviderConfig
from gateway.providers.base import Target
from gateway.providers.sse import SSEvent, sse_events
from gateway.schema import ErrorKind, GatewayError
from gateway.secrets.refs import value_of

ErrorMapper = Callable[..., GatewayError]
STALE_RESENDS = 1  # a pooled keep-alive socket the upstream closed (it restarted): resent once, on another socket
RAW_STREAM_HEADER = ("X-Stainless-Raw-Response", "stream")  # the SDKs' own flag: hand back the open response


def sdk_client(sdk: ModuleType, client_cls: Any, config: ProviderConfig) -> Any:
    """An async Stainless SDK client (openai / anthropic) with retries off, the config's timeouts, aiohttp transport."""
    t = config.timeouts
    return client_cls(
        api_key=value_of(config.api_key) or "missing-key",
        base_url=config.base_url,
        max_retries=0,
        default_headers=config.headers or None,
        timeout=httpx2.Timeout(t.total, connect=t.connect, read=t.read),
        http_client=sdk.DefaultAioHttpClient(
            limits=httpx2.Limits(max_connections=config.max_connections, max_keepalive_connections=256),
        ),
    )


def _stale_socket(exc: BaseException) -> bool:
    """The SDK's connection error came from a pooled socket the server had closed before answering anything."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, aiohttp.ServerDisconnectedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class SdkHttp:
    """One provider's HTTP through its SDK client: JSON in, JSON or an open SSE response out, errors mapped."""

    def __init__(self, client: Any, provider: str, map_error: ErrorMapper) -> None:
        self.client = client
        self.provider = provider
        self.map_error = map_error
        self._silent: set[str] = set()  # upstream models whose last call failed after a resend (no resend now)

    def error(self, exc: BaseException, target: Target, **kw: Any) -> GatewayError:
        return self.map_error(exc, provider=self.provider, model=target.name, **kw)

    async def _post(self, path: str, body: dict[str, Any], model: str,
                    options: dict[str, Any] | None = None) -> httpx2.Response:  # fmt: skip
        """POST through the SDK. A request that met a closed socket (no byte of an answer came back) while the
        upstream model was last seen answering is sent again once: most likely a pooled keep-alive socket the
        upstream closed on a restart. After a resend fails too, none is made for that model until it answers
        again, so an upstream that resets every connection costs one extra call per outage, not per request."""
        for resend in range(STALE_RESENDS + 1):
            try:
                response = await self.client.post(path, cast_to=httpx2.Response, body=body, options=options or {})
            except Exception as exc:
                if resend:  # the resend failed too (however): the upstream is not answering
                    self._silent.add(model)
                if not _stale_socket(exc) or resend == STALE_RESENDS or model in self._silent:
                    raise
                continue
            self._silent.discard(model)
            return response  # type: ignore[no-any-return]
        raise AssertionError("unreachable")

    async def post_json(self, path: str, body: dict[str, Any], target: Target) -> dict[str, Any]:
        try:
            response = await self._post(path, body, target.upstream)
            data = json.loads(response.content)
        except Exception as exc:
            raise self.error(exc, target) from None
        if not isinstance(data, dict):
            raise GatewayError(
                ErrorKind.INVALID_RESPONSE,
                f"{self.provider}: {path} returned a non-object body",
                provider=self.provider,
                model=target.name,
            )
        return data

    async def open_stream(self, path: str, body: dict[str, Any], target: Target) -> httpx2.Response:
        try:
            return await self._post(path, body, target.upstream, {"headers": dict([RAW_STREAM_HEADER])})
        except Exception as exc:
            raise self.error(exc, target) from None

    @staticmethod
    def events(response: httpx2.Response) -> AsyncIterator[SSEvent]:
        return sse_events(response.aiter_lines())

    async def aclose(self) -> None:
        await self.client.close()
