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

import httpx2

from gateway.config import ProviderConfig
from gateway.providers.base import Target
from gateway.providers.sse import SSEvent, sse_events
from gateway.providers.stale import StaleResend
from gateway.schema import ErrorKind, GatewayError
from gateway.secrets.refs import value_of

ErrorMapper = Callable[..., GatewayError]
RAW_STREAM_HEADER = ("X-Stainless-Raw-Response", "stream")  # the SDKs' own flag: hand back the open response


def sdk_client(sdk: ModuleType, client_cls: Any, config: ProviderConfig, *, pooled: bool = True) -> Any:
    """An async Stainless SDK client (openai / anthropic) with retries off and the config's timeouts; with its
    aiohttp transport when `pooled` (else it is only read, for its base URL and headers, and never sends)."""
    t = config.timeouts
    pool = httpx2.Limits(max_connections=config.max_connections, max_keepalive_connections=256)
    return client_cls(
        api_key=value_of(config.api_key) or "missing-key",
        base_url=config.base_url,
        max_retries=0,
        default_headers=config.headers or None,
        timeout=httpx2.Timeout(t.total, connect=t.connect, read=t.read),
        **({"http_client": sdk.DefaultAioHttpClient(limits=pool)} if pooled else {}),
    )


class SdkHttp:
    """One provider's HTTP through its SDK client: JSON in, JSON or an open SSE response out, errors mapped."""

    def __init__(self, client: Any, provider: str, map_error: ErrorMapper) -> None:
        self.client = client
        self.provider = provider
        self.map_error = map_error
        self._resend = StaleResend()

    def error(self, exc: BaseException, target: Target, **kw: Any) -> GatewayError:
        return self.map_error(exc, provider=self.provider, model=target.name, **kw)

    async def _post(self, path: str, body: dict[str, Any], model: str,
                    options: dict[str, Any] | None = None) -> httpx2.Response:  # fmt: skip
        """POST through the SDK (a stale pooled socket resent once, see StaleResend)."""

        async def send(fresh: bool) -> httpx2.Response:  # the SDK's pool drops sockets that hung up before reuse
            return await self.client.post(path, cast_to=httpx2.Response, body=body, options=options or {})  # type: ignore[no-any-return]

        return await self._resend.send(send, model)

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

    @staticmethod
    async def close_stream(response: httpx2.Response) -> None:
        await response.aclose()

    async def aclose(self) -> None:
        await self.client.close()
