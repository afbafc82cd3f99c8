"""The replica pipeline without Ray: stream shaping, errors before/after start, total timeout, heartbeats."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from gateway.config import ModelEntry, Timeouts
from gateway.pipeline import Pipeline
from gateway.pricing import Pricer
from gateway.providers.base import Target
from gateway.schema import (
    ChatRequest,
    ChatResponse,
    ErrorEvent,
    ErrorKind,
    FinishEvent,
    GatewayError,
    HeartbeatEvent,
    StartEvent,
    TextDelta,
    Usage,
    UsageEvent,
)
from gateway.streaming import batches_with_heartbeats


class FakeProvider:
    """Scripted adapter: a list of events/exceptions/sleeps to produce."""

    name = "fake"

    def __init__(self, script: list, answer_delay: float = 0.0) -> None:
        self.script = script
        self.answer_delay = answer_delay
        self.closed = False

    async def complete(self, request, target) -> ChatResponse:
        await asyncio.sleep(self.answer_delay)
        return ChatResponse(
            id="x",
            text="hi",
            finish_reason="stop",
            usage=Usage(),
            provider="fake",
            model=target.name,
            upstream_model="u",
        )

    async def stream(self, request, target):
        try:
            for item in self.script:
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, float):
                    await asyncio.sleep(item)
                    continue
                yield item
        finally:
            self.closed = True


class FakeRegistry:
    def __init__(self, provider: FakeProvider, total: float = 30.0) -> None:
        self._provider = provider
        self._total = total

    def targets(self, model: str, kind: str = "chat") -> list[Target]:
        return [self.target(model, kind)]

    def unsupported(self, request, target) -> None:
        return None

    def target(self, model: str, kind: str = "chat") -> Target:
        return Target(model, "fake", ModelEntry(provider="fake", upstream="gpt-4o-mini"))

    def kind(self, name: str) -> str:
        return "openai"

    @property
    def catalog(self) -> dict:
        return {"m": ModelEntry(provider="fake", upstream="gpt-4o-mini")}

    def provider(self, name: str) -> FakeProvider:
        return self._provider

    def timeouts(self, name: str) -> Timeouts:
        return Timeouts(total=self._total)

    async def aclose(self) -> None:
        pass


REQ = ChatRequest(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
START = StartEvent(id="s", provider="fake", model="m", upstream_model="u")
FINISH = FinishEvent(finish_reason="stop", usage=Usage(output_tokens=3))


async def _events(pipeline: Pipeline) -> list:
    return [e async for e in pipeline.stream(REQ)]


async def test_stream_passes_events_adds_running_usage_and_timing():
    provider = FakeProvider([START, *[TextDelta(text=" word")] * 4, FINISH])
    events = await _events(Pipeline(pricer=Pricer(), registry=FakeRegistry(provider), usage_every=2))
    assert [e.type for e in events] == [
        "start",
        "text_delta",
        "text_delta",
        "usage",
        "text_delta",
        "text_delta",
        "usage",
        "finish",
    ]
    assert [e.usage.output_tokens for e in events if isinstance(e, UsageEvent)] == [2, 4]
    assert events[-1].latency_ms >= 0 and events[-1].attempts == 1
    assert events[-1].cost_usd == Decimal("0.0000018")  # 3 output tokens of gpt-4o-mini at $0.60 per million
    assert provider.closed


async def test_error_before_start_is_raised_after_start_is_an_error_event():
    with pytest.raises(GatewayError) as info:
        await _events(
            Pipeline(pricer=Pricer(), registry=FakeRegistry(FakeProvider([GatewayError("rate_limited", "slow")])))
        )
    assert info.value.kind is ErrorKind.RATE_LIMITED
    cut = GatewayError("truncated_stream", "cut", usage=Usage(output_tokens=1))
    events = await _events(
        Pipeline(pricer=Pricer(), registry=FakeRegistry(FakeProvider([START, TextDelta(text="a"), cut])))
    )
    assert isinstance(events[-1], ErrorEvent) and events[-1].error.kind is ErrorKind.TRUNCATED_STREAM
    assert events[-1].usage.output_tokens == 1
    assert not any(isinstance(e, FinishEvent) for e in events)


async def test_unexpected_exception_after_the_first_token_still_ends_visibly():
    script = [START, TextDelta(text="a"), ValueError("bug")]
    events = await _events(Pipeline(pricer=Pricer(), registry=FakeRegistry(FakeProvider(script))))
    assert events[1] == TextDelta(text="a")
    assert isinstance(events[-1], ErrorEvent) and events[-1].error.kind is ErrorKind.INTERNAL


async def test_total_timeout_bounds_complete_and_trickling_streams():
    slow = Pipeline(pricer=Pricer(), registry=FakeRegistry(FakeProvider([], answer_delay=5), total=0.05))
    with pytest.raises(GatewayError) as info:
        await slow.complete(REQ.model_copy(update={"stream": False}))
    assert info.value.kind is ErrorKind.TIMEOUT
    trickle = FakeProvider([START, *([TextDelta(text="a"), 0.02] * 20), FINISH])
    events = await _events(Pipeline(pricer=Pricer(), registry=FakeRegistry(trickle, total=0.1)))
    assert isinstance(events[-1], ErrorEvent) and events[-1].error.kind is ErrorKind.TRUNCATED_STREAM


async def test_heartbeats_fill_silence_and_closing_closes_the_source():
    provider = FakeProvider([START, 0.2, TextDelta(text="a"), FINISH])
    batches = [b async for b in batches_with_heartbeats(provider.stream(REQ, None), 0.03)]
    events = [e for b in batches for e in b]
    assert events[0] == START and events[-1] == FINISH
    assert sum(isinstance(e, HeartbeatEvent) for e in events) >= 3
    endless = FakeProvider([START, 10.0])
    stream = batches_with_heartbeats(endless.stream(REQ, None), 0.01)
    assert (await anext(stream)) == [START]
    assert (await anext(stream)) == [HeartbeatEvent()]
    await stream.aclose()  # the client went away
    assert endless.closed


async def test_ready_events_are_coalesced_and_waiting_ends_a_batch():
    deltas = [TextDelta(text=str(i)) for i in range(5)]
    provider = FakeProvider([START, *deltas, 0.05, *deltas, FINISH])
    batches = [b async for b in batches_with_heartbeats(provider.stream(REQ, None), 5)]
    assert batches == [[START, *deltas], [*deltas, FINISH]]


async def test_a_failure_after_ready_events_still_delivers_them():
    provider = FakeProvider([START, TextDelta(text="a"), RuntimeError("boom")])
    stream = batches_with_heartbeats(provider.stream(REQ, None), 5)
    assert await anext(stream) == [START, TextDelta(text="a")]
    with pytest.raises(RuntimeError):
        await anext(stream)
