"""The request pipeline of one replica: resolve the model, check capabilities, call the adapter, shape the result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from gateway.pricing import Pricer
from gateway.providers import ProviderRegistry, Target
from gateway.schema import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ErrorEvent,
    ErrorKind,
    FinishEvent,
    GatewayError,
    StartEvent,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
    validation_error,
)


def check_capabilities(request: ChatRequest, target: Target) -> None:
    """Refuse a request the chosen model cannot serve, naming the field."""
    caps = target.entry.capabilities
    if request.has_images and not caps.images:
        raise validation_error("messages", f"model `{target.name}` does not accept image input")
    if request.tools and not caps.tools:
        raise validation_error("tools", f"model `{target.name}` does not support tool calls")
    if request.wants_json and not caps.json_mode:
        raise validation_error("response_format", f"model `{target.name}` does not support JSON mode")
    if request.stream and not caps.streaming:
        raise validation_error("stream", f"model `{target.name}` does not support streaming")
    limit = target.entry.max_output_tokens
    if limit is not None and request.max_tokens is not None and request.max_tokens > limit:
        raise validation_error(
            "max_tokens", f"{request.max_tokens} exceeds the {limit} output tokens of `{target.name}`"
        )


class Pipeline:
    """Everything one request does inside a replica (no Ray here; actor-backed parts arrive as plain objects)."""

    def __init__(self, registry: ProviderRegistry, pricer: Pricer, *, usage_every: int = 20) -> None:
        self._registry = registry
        self._pricer = pricer
        self._usage_every = usage_every

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        target = self._registry.target(request.model)
        check_capabilities(request, target)
        total = self._registry.timeouts(target.provider).total
        try:
            async with asyncio.timeout(total):
                response = await self._registry.provider(target.provider).complete(request, target)
        except TimeoutError:
            raise GatewayError(
                ErrorKind.TIMEOUT,
                f"no answer within the total timeout of {total:g} s",
                provider=target.provider,
                model=target.name,
            ) from None
        latency = (time.perf_counter() - started) * 1000
        cost = self._pricer.cost(self._registry.kind(target.provider), response.upstream_model, response.usage)
        return response.model_copy(update={"attempts": 1, "latency_ms": latency, "cost_usd": cost})

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Typed events: start, deltas, running usage, then finish — or an error event once started.

        An error before the upstream accepted the call is raised (the ingress turns it into an
        HTTP error); after that it becomes a final ErrorEvent that never looks like a finish.
        """
        started = time.perf_counter()
        target = self._registry.target(request.model)
        check_capabilities(request, target)
        events = self._registry.provider(target.provider).stream(request, target)
        deadline = started + self._registry.timeouts(target.provider).total
        deltas = 0
        begun = False
        try:
            async for event in events:
                if time.perf_counter() > deadline:  # silence is bounded by the read timeout; this bounds trickling
                    raise GatewayError(
                        ErrorKind.TRUNCATED_STREAM if begun else ErrorKind.TIMEOUT,
                        "the stream exceeded its total timeout",
                        provider=target.provider,
                        model=target.name,
                        usage=Usage(output_tokens=deltas),
                    )
                if isinstance(event, TextDelta | ToolCallDelta):
                    deltas += 1
                    yield event
                    if deltas % self._usage_every == 0:
                        yield UsageEvent(usage=Usage(output_tokens=deltas))
                elif isinstance(event, FinishEvent):
                    latency = (time.perf_counter() - started) * 1000
                    cost = self._pricer.cost(self._registry.kind(target.provider), target.upstream, event.usage)
                    yield event.model_copy(update={"latency_ms": latency, "attempts": 1, "cost_usd": cost})
                elif isinstance(event, StartEvent):
                    begun = True
                    yield event.model_copy(update={"attempt": 1})
                else:
                    yield event
        except GatewayError as exc:
            if not begun:
                raise
            yield ErrorEvent(error=exc.to_info(), usage=exc.usage)
        except Exception as exc:  # a bug or an unmapped failure must still end the stream visibly
            if not begun:
                raise GatewayError(ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}") from exc
            yield ErrorEvent(error=GatewayError(ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}").to_info())
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def embed(self, request: EmbeddingsRequest) -> EmbeddingsResponse:
        started = time.perf_counter()
        target = self._registry.target(request.model, kind="embedding")
        dims = target.entry.dimensions
        if request.dimensions is not None and dims is not None and request.dimensions > dims:
            raise validation_error(
                "dimensions", f"{request.dimensions} exceeds the {dims} dimensions of `{target.name}`"
            )
        response = await self._registry.provider(target.provider).embed(request, target)
        return response.model_copy(update={"latency_ms": (time.perf_counter() - started) * 1000})

    async def aclose(self) -> None:
        await self._registry.aclose()
