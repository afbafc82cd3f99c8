"""The request pipeline of one replica: resolve the model, check capabilities, call the adapter, shape the result."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from gateway.pricing import Pricer
from gateway.providers import ProviderRegistry, Target
from gateway.routing.breaker import BreakerBoard
from gateway.routing.planner import AUTO, RoutePlan, plan_route
from gateway.routing.policy import Breakers, Retry, RoutingPolicy
from gateway.routing.retry import decide
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

log = logging.getLogger("gateway.pipeline")
T = TypeVar("T")


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

    def __init__(
        self, registry: ProviderRegistry, pricer: Pricer, policy: RoutingPolicy | None = None, *, usage_every: int = 20
    ) -> None:
        self._registry = registry
        self._pricer = pricer
        self._policy = policy
        self._rules = policy.retry if policy is not None else Retry()
        b = policy.breakers if policy is not None else Breakers()
        self.breakers = BreakerBoard(b.failure_threshold, b.cooldown_s, b.half_open_probes)
        self._usage_every = usage_every

    def plan(self, request: ChatRequest) -> RoutePlan:
        """The candidates to try, in order (a requested model's missing capability is named as a field error)."""
        if request.model != AUTO:
            check_capabilities(request, self._registry.target(request.model))
        return plan_route(request, self._policy, self._registry.catalog)

    async def _run(self, plan: RoutePlan, once: Callable[[Target], Awaitable[T]]) -> tuple[T, Target, int]:
        """Try the plan: retry a model on curable errors, fall back on the rest, stop on final ones."""
        attempts = 0
        last: GatewayError | None = None
        for candidate in plan.candidates:
            target = self._registry.target(candidate.model)
            breaker = self.breakers.get(target.provider, target.name)
            tries = 0
            while True:
                if not breaker.allow():
                    log.info("skipping %s: its circuit breaker is open", target.name)
                    last = last or GatewayError(
                        ErrorKind.OVERLOADED, f"`{target.name}` is failing; its circuit breaker is open",
                        provider=target.provider, model=target.name, retry_after=breaker.retry_in(),
                    )  # fmt: skip
                    break
                attempts += 1
                tries += 1
                try:
                    result = await once(target)
                    self.breakers.record(target.provider, target.name, None)
                    return result, target, attempts
                except GatewayError as exc:
                    self.breakers.record(target.provider, target.name, exc)
                    last = exc
                    decision = decide(exc, tries, attempts, self._rules)
                    log.info("attempt %d on %s failed (%s): %s", attempts, target.name, exc.kind.value, decision.why)
                    if decision.action == "retry":
                        await asyncio.sleep(decision.delay_s)
                        continue
                    if decision.action == "stop":
                        raise
                    break
        assert last is not None
        raise last

    async def _complete_once(self, request: ChatRequest, target: Target) -> ChatResponse:
        total = self._registry.timeouts(target.provider).total
        try:
            async with asyncio.timeout(total):
                return await self._registry.provider(target.provider).complete(request, target)
        except TimeoutError:
            raise GatewayError(ErrorKind.TIMEOUT, f"no answer within the total timeout of {total:g} s",
                               provider=target.provider, model=target.name) from None  # fmt: skip

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        plan = self.plan(request)
        response, target, attempts = await self._run(plan, lambda t: self._complete_once(request, t))
        latency = (time.perf_counter() - started) * 1000
        cost = self._pricer.cost(self._registry.kind(target.provider), response.upstream_model, response.usage)
        return response.model_copy(
            update={"attempts": attempts, "latency_ms": latency, "cost_usd": cost, "route": plan.header}
        )

    async def _open(self, request: ChatRequest, target: Target) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
        """Open a stream on `target` until the upstream accepts it (its StartEvent); failures before are retryable."""
        events = self._registry.provider(target.provider).stream(request, target)
        try:
            return events, await anext(events)
        except BaseException:
            await events.aclose()  # type: ignore[attr-defined]
            raise

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Typed events: start, deltas, running usage, then finish — or an error event once started.

        Until an upstream accepts the call the plan is retried and fallen back along; an error
        then is raised (the ingress turns it into an HTTP error). After that it becomes a final
        ErrorEvent that never looks like a finish.
        """
        started = time.perf_counter()
        plan = self.plan(request)
        (events, first), target, attempts = await self._run(plan, lambda t: self._open(request, t))
        deadline = started + self._registry.timeouts(target.provider).total
        deltas = 0
        try:
            if isinstance(first, StartEvent):
                yield first.model_copy(update={"attempt": attempts, "route": plan.header})
            async for event in events:
                if time.perf_counter() > deadline:  # silence is bounded by the read timeout; this bounds trickling
                    raise GatewayError(ErrorKind.TRUNCATED_STREAM, "the stream exceeded its total timeout",
                                       provider=target.provider, model=target.name,
                                       usage=Usage(output_tokens=deltas))  # fmt: skip
                if isinstance(event, TextDelta | ToolCallDelta):
                    deltas += 1
                    yield event
                    if deltas % self._usage_every == 0:
                        yield UsageEvent(usage=Usage(output_tokens=deltas))
                elif isinstance(event, FinishEvent):
                    latency = (time.perf_counter() - started) * 1000
                    cost = self._pricer.cost(self._registry.kind(target.provider), target.upstream, event.usage)
                    yield event.model_copy(update={"latency_ms": latency, "attempts": attempts, "cost_usd": cost})
                else:
                    yield event
        except GatewayError as exc:
            self.breakers.record(target.provider, target.name, exc)
            yield ErrorEvent(error=exc.to_info(), usage=exc.usage)
        except Exception as exc:  # a bug or an unmapped failure must still end the stream visibly
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
