"""Choosing an adapter's HTTP: the lean transport by default, or the official SDK's client (`transport: sdk`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any, Protocol

from gateway.config import ProviderConfig
from gateway.providers.base import Target
from gateway.providers.fast_http import FastHttp, sdk_headers
from gateway.providers.sdk_http import ErrorMapper, SdkHttp, sdk_client
from gateway.providers.sse import SSEvent
from gateway.schema import GatewayError


class ProviderHttp(Protocol):
    """What the OpenAI and Anthropic adapters need of their HTTP, whichever transport carries it."""

    provider: str

    def error(self, exc: BaseException, target: Target, **kw: Any) -> GatewayError: ...

    async def post_json(self, path: str, body: dict[str, Any], target: Target) -> dict[str, Any]: ...

    async def open_stream(self, path: str, body: dict[str, Any], target: Target) -> Any: ...

    def events(self, response: Any) -> AsyncIterator[SSEvent]: ...

    async def close_stream(self, response: Any) -> None: ...

    async def aclose(self) -> None: ...


def provider_http(sdk: ModuleType, client_cls: Any, config: ProviderConfig, name: str,
                  map_error: ErrorMapper) -> ProviderHttp:  # fmt: skip
    """An SDK client is built either way: the lean transport takes its base URL and headers from it."""
    if config.transport == "sdk":
        return SdkHttp(sdk_client(sdk, client_cls, config), name, map_error)
    client = sdk_client(sdk, client_cls, config, pooled=False)
    return FastHttp(config, str(client.base_url), sdk_headers(client), name, map_error)
