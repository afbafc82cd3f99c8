"""An adapter whose credentials live in AWS Secrets Manager: on the provider's auth error it re-reads them and, when
they changed (a rotation), retries the call once on an adapter built from the new values."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

from gateway.config import ProviderConfig
from gateway.providers.base import Provider, Target
from gateway.schema import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ErrorKind,
    GatewayError,
    StreamEvent,
)
from gateway.secrets.resolver import SecretResolver, SecretUnavailable, aws_refs, with_values

log = logging.getLogger("gateway.providers.rotating")
Build = Callable[[ProviderConfig], Provider]
T = TypeVar("T")
Opened = tuple[AsyncIterator[StreamEvent], StreamEvent | None]  # a stream and its first event (None: it was empty)


class RotatingProvider:
    """Wraps the adapter `build(resolved config)`. One re-read at a time: concurrent auth errors wait for it and
    then retry on its adapter; when a re-read found nothing new, auth errors surface for `quiet_s` without another.
    A replaced adapter is closed once calls already on it have had `timeouts.total` to finish."""

    def __init__(
        self, config: ProviderConfig, build: Build, resolver: SecretResolver, inner: Provider | None = None, *,
        quiet_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._config = config
        self._build = build
        self._resolver = resolver
        self._quiet_s = quiet_s
        self._clock = clock
        self._resolved = with_values(config, resolver)
        self._inner = inner if inner is not None else build(self._resolved)
        self.name = self._inner.name
        self._lock = asyncio.Lock()
        self._quiet_until = float("-inf")
        self._closing: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"RotatingProvider({self.name!r}, {type(self._inner).__name__})"

    def unsupported(self, request: ChatRequest | EmbeddingsRequest, target: Target) -> str | None:
        return self._inner.unsupported(request, target)

    async def complete(self, request: ChatRequest, target: Target) -> ChatResponse:
        return await self._retrying(lambda p: p.complete(request, target))

    async def embed(self, request: EmbeddingsRequest, target: Target) -> EmbeddingsResponse:
        return await self._retrying(lambda p: p.embed(request, target))

    async def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamEvent]:
        """The inner stream; one that fails with an auth error before its first event is retried like a call."""
        events, first = await self._retrying(lambda p: _first(p.stream(request, target)))
        async with aclosing(events):  # type: ignore[type-var]
            if first is None:
                return
            yield first
            async for event in events:
                yield event

    async def _retrying(self, call: Callable[[Provider], Awaitable[T]]) -> T:
        """`call` on the adapter in use; after its auth error, once more on the adapter `_recover` gives."""
        inner = self._inner
        try:
            return await call(inner)
        except GatewayError as exc:
            if (retry := await self._recover(inner, exc)) is None:
                raise
        return await call(retry)

    async def _recover(self, used: Provider, error: GatewayError) -> Provider | None:
        """The adapter to retry on after `error` from `used`: a newer one, or one built from re-read credentials."""
        if error.kind is not ErrorKind.AUTH:
            return None
        async with self._lock:
            if self._inner is not used:  # another call re-read them while this one was in flight
                return self._inner
            if self._clock() < self._quiet_until:
                return None
            fresh = await self._reread()
            if fresh is None:
                self._quiet_until = self._clock() + self._quiet_s
                return None
            self._retire(self._inner)
            self._resolved, self._inner = fresh, self._build(fresh)
            log.info("%s: credentials changed in Secrets Manager; retrying on a new client", self.name)
            return self._inner

    async def _reread(self) -> ProviderConfig | None:
        """The config with re-read values if they differ from the ones in use, else None."""
        try:
            fresh = await asyncio.to_thread(self._refreshed)
        except SecretUnavailable as exc:
            log.warning("%s: refused its credentials, and re-reading them failed: %s", self.name, exc)
            return None
        return None if fresh == self._resolved else fresh

    def _refreshed(self) -> ProviderConfig:
        self._resolver.refresh(*aws_refs(self._config))
        return with_values(self._config, self._resolver)

    def _retire(self, old: Provider) -> None:
        task = asyncio.create_task(self._close_later(old))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_later(self, old: Provider) -> None:
        try:
            await asyncio.sleep(self._config.timeouts.total)
        finally:  # also when cancelled by `aclose`
            await old.aclose()

    async def aclose(self) -> None:
        closing = list(self._closing)
        for task in closing:
            task.cancel()
        await asyncio.gather(*closing, return_exceptions=True)
        await self._inner.aclose()


class RotatingTokenCounter(RotatingProvider):
    """A RotatingProvider around an adapter that also counts prompt tokens (see `TokenCounter`)."""

    async def count_tokens(self, request: ChatRequest, target: Target) -> int:
        return await self._retrying(lambda p: p.count_tokens(request, target))  # type: ignore[attr-defined]


def rotating(config: ProviderConfig, build: Build, resolver: SecretResolver) -> RotatingProvider:
    """The wrapper that fits the adapter: one that counts tokens when the adapter does."""
    inner = build(with_values(config, resolver))
    cls = RotatingTokenCounter if hasattr(inner, "count_tokens") else RotatingProvider
    return cls(config, build, resolver, inner)


async def _first(events: AsyncIterator[StreamEvent]) -> Opened:
    try:
        return events, await anext(events)
    except StopAsyncIteration:
        return events, None
