"""The plan runner without Ray: first-token timeouts, deadlines, hedging and rate leases, over scripted adapters."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.config import ModelEntry, TimeoutOverrides, Timeouts
from gateway.control.health import ProviderHealth
from gateway.control.replica import RateLimit, ReplicaControl
from gateway.control.router_state import RouterState
from gateway.control.snapshot import Outcome
from gateway.pipeline import Pipeline
from gateway.pricing import Pricer
from gateway.providers.base import Target
from gateway.routing.policy import Chain, Hedging, RoutingPolicy
from gateway.schema import ChatRequest, ErrorKind, FinishEvent, GatewayError, StartEvent, TextDelta, Usage
from gateway.tokens import TokenEstimator


class Scripted:
    """One adapter serving several models; each model streams after its own first-token delay."""

    name = "fake"

    def __init__(self, first_token_s: dict[str, float]) -> None:
        self.first_token_s = first_token_s
        self.opened: list[str] = []
        self.closed: list[str] = []

    async def stream(self, request, target):
        self.opened.append(target.name)
        try:
            yield StartEvent(id="s", provider="fake", model=target.name, upstream_model=target.name)
            await asyncio.sleep(self.first_token_s.get(target.name, 0.0))
            yield TextDelta(text=f"from {target.name}")
            yield FinishEvent(finish_reason="stop", usage=Usage(input_tokens=3, output_tokens=2))
        finally:
            self.closed.append(target.name)


ENTRY = ModelEntry(provider="fake", upstream="gpt-4o-mini")
CATALOG = {
    "a": ENTRY,
    "b": ENTRY,
    "c": ENTRY,
    "slow": ENTRY.model_copy(update={"timeouts": TimeoutOverrides(first_token=0.05)}),
}


class Registry:
    def __init__(self, adapter: Scripted) -> None:
        self.adapter = adapter

    def targets(self, model: str, kind: str = "chat") -> list[Target]:
        return [self.target(model, kind)]

    def unsupported(self, request, target) -> None:
        return None

    def target(self, model: str, kind: str = "chat") -> Target:
        return Target(model, "fake", CATALOG[model])

    def kind(self, name: str) -> str:
        return "openai"

    @property
    def catalog(self) -> dict:
        return CATALOG

    def provider(self, name: str) -> Scripted:
        return self.adapter

    def timeouts(self, name: str) -> Timeouts:
        return Timeouts(first_token=5.0, total=30.0)

    async def aclose(self) -> None:
        pass


def _policy(**kw) -> RoutingPolicy:
    return RoutingPolicy(task_classes={"quick": Chain(candidates=("a", "b", "c"))}, **kw)


def _request(**meta) -> ChatRequest:
    return ChatRequest(model="auto", stream=True, messages=[{"role": "user", "content": "x"}], metadata=meta)


async def _text(pipeline: Pipeline, request: ChatRequest) -> tuple[str, list]:
    events = [e async for e in pipeline.stream(request)]
    return "".join(e.text for e in events if isinstance(e, TextDelta)), events


def _with_ttft_stats(control: ReplicaControl, model: str, ttft_ms: float, samples: int = 30) -> None:
    health = ProviderHealth("fake", control.policy.breakers)
    health.report("x", [Outcome("fake", model, "x", 1.0, None, "", ttft_ms, ttft_ms)] * samples)
    state = RouterState(control.policy, None, CATALOG, version=100)
    state.absorb(health.view())
    control.install(state.snapshot())


async def test_a_silent_first_token_falls_back_before_the_client_sees_a_byte():
    adapter = Scripted({"slow": 10.0})
    pipeline = Pipeline(
        Registry(adapter), Pricer(), RoutingPolicy(task_classes={"quick": Chain(candidates=("slow", "b"))})
    )
    started = time.perf_counter()
    text, events = await _text(pipeline, _request())
    assert text == "from b" and events[0].attempt == 2 and time.perf_counter() - started < 5
    assert adapter.closed == ["slow", "b"]  # the silent upstream was abandoned, its stream closed
    assert pipeline.control.drain()["fake"][0].kind == "timeout"


async def test_hedging_starts_the_next_candidate_after_the_p95_first_token_and_keeps_the_faster():
    adapter = Scripted({"a": 2.0, "b": 0.0})
    pipeline = Pipeline(Registry(adapter), Pricer(), _policy(hedging=Hedging(enabled=True, min_samples=10)))
    _with_ttft_stats(pipeline.control, "a", ttft_ms=60.0)
    started = time.perf_counter()
    text, events = await _text(pipeline, _request())
    assert text == "from b" and time.perf_counter() - started < 1.5
    assert adapter.opened == ["a", "b"] and "a" in adapter.closed  # the slower one was cancelled and closed
    assert events[-1].attempts == 2  # the hedged attempt is counted


async def test_no_hedge_without_enough_observations():
    adapter = Scripted({"a": 0.2})
    pipeline = Pipeline(Registry(adapter), Pricer(), _policy(hedging=Hedging(enabled=True, min_samples=50)))
    _with_ttft_stats(pipeline.control, "a", ttft_ms=10.0, samples=20)
    text, _ = await _text(pipeline, _request())
    assert text == "from a" and adapter.opened == ["a"]


async def test_candidates_that_do_not_fit_the_deadline_are_skipped():
    adapter = Scripted({})
    pipeline = Pipeline(Registry(adapter), Pricer(), _policy())
    _with_ttft_stats(pipeline.control, "a", ttft_ms=3000.0)  # a usually takes 3 s to its first token
    text, _ = await _text(pipeline, _request(timeout_ms=1000))
    assert text == "from b" and adapter.opened == ["b"]


async def test_every_limit_is_clipped_to_the_deadline():
    adapter = Scripted({"a": 10.0, "b": 10.0, "c": 10.0})
    pipeline = Pipeline(Registry(adapter), Pricer(), _policy())
    started = time.perf_counter()
    with pytest.raises(GatewayError) as info:
        await _text(pipeline, _request(deadline=time.time() + 0.3))
    assert info.value.kind is ErrorKind.TIMEOUT and time.perf_counter() - started < 1.0


async def test_a_spent_rate_lease_moves_to_the_next_provider_without_calling_it():
    adapter = Scripted({})
    control = ReplicaControl("r", _policy(), limits={"fake": RateLimit(rpm=1)})
    pipeline = Pipeline(Registry(adapter), Pricer(), control=control)
    with pytest.raises(GatewayError) as info:  # no refiller (no actor) and an empty lease: refused locally
        await _text(pipeline, _request())
    assert info.value.kind is ErrorKind.RATE_LIMITED and adapter.opened == []


async def test_a_latency_target_tries_candidates_observed_to_meet_it_first():
    adapter = Scripted({})
    pipeline = Pipeline(Registry(adapter), Pricer(), _policy())
    _with_ttft_stats(pipeline.control, "a", ttft_ms=500.0)
    text, _ = await _text(pipeline, _request(latency_target_ms=100))
    assert text == "from b" and adapter.opened == ["b"]
    text, _ = await _text(pipeline, _request())  # without a target the policy's order stands
    assert text == "from a"


class Breaking(Scripted):
    """`a` sends two words and breaks; any other model continues and records the request it got."""

    def __init__(self) -> None:
        super().__init__({})
        self.requests: list = []

    async def stream(self, request, target):
        self.opened.append(target.name)
        self.requests.append(request)
        yield StartEvent(id="s", provider="fake", model=target.name, upstream_model=target.name)
        if target.name == "a":
            yield TextDelta(text="Hello ")
            yield TextDelta(text="wor")
            raise GatewayError(ErrorKind.TRUNCATED_STREAM, "cut", provider="fake", model="a")
        yield TextDelta(text="ld.")
        yield FinishEvent(finish_reason="stop", usage=Usage(input_tokens=10, output_tokens=1))


PREFILL = ENTRY.model_copy(update={"capabilities": ENTRY.capabilities.model_copy(update={"prefill": True})})


async def test_a_broken_stream_continues_on_a_prefill_capable_candidate_when_the_policy_allows():
    from gateway.routing.policy import Streaming

    CATALOG["p"] = PREFILL
    try:
        adapter = Breaking()
        policy = RoutingPolicy(task_classes={"quick": Chain(candidates=("a", "b", "p"))},
                               streaming=Streaming(continue_on_break=True))  # fmt: skip
        text, events = await _text(Pipeline(Registry(adapter), Pricer(), policy), _request())
        assert text == "Hello world." and isinstance(events[-1], FinishEvent)
        assert adapter.opened == ["a", "p"]  # b cannot take a prefill: skipped
        prefill = adapter.requests[1].messages[-1]
        assert prefill.role == "assistant" and prefill.content == "Hello wor"
        assert sum(isinstance(e, StartEvent) for e in events) == 1 and events[-1].attempts == 2
        sent = TokenEstimator().count_text("Hello wor")  # what the broken stream sent, counted as one text
        assert events[-1].usage.output_tokens == 1 + sent  # the continuation's, plus what the broken stream sent
        without = RoutingPolicy(task_classes={"quick": Chain(candidates=("a", "p"))})
        text, events = await _text(Pipeline(Registry(Breaking()), Pricer(), without), _request())
        assert (
            text == "Hello wor" and events[-1].type == "error" and events[-1].error.kind is ErrorKind.TRUNCATED_STREAM
        )
    finally:
        del CATALOG["p"]


class FailsFast(Scripted):
    async def stream(self, request, target):
        self.opened.append(target.name)
        if target.name == "a":
            raise GatewayError(ErrorKind.SERVER, "boom", provider="fake", model="a")
        yield StartEvent(id="s", provider="fake", model=target.name, upstream_model=target.name)
        yield TextDelta(text=f"from {target.name}")
        yield FinishEvent(finish_reason="stop", usage=Usage(input_tokens=3, output_tokens=2))


async def test_a_hedge_that_never_started_leaves_its_candidate_for_the_fallback():
    adapter = FailsFast({})
    policy = _policy(hedging=Hedging(enabled=True, min_samples=10), retry={"backoff_base_s": 0, "backoff_max_s": 0})
    pipeline = Pipeline(Registry(adapter), Pricer(), policy)
    _with_ttft_stats(pipeline.control, "a", ttft_ms=500.0)
    text, events = await _text(pipeline, _request())
    assert text == "from b" and adapter.opened == ["a", "a", "b"] and events[-1].attempts == 3


class RateLimitedOnce(Scripted):
    async def complete(self, request, target):
        from gateway.schema import ChatResponse

        self.opened.append(time.perf_counter())
        if len(self.opened) == 1:
            raise GatewayError(ErrorKind.RATE_LIMITED, "slow down", provider="fake", model="a", retry_after=0.2)
        return ChatResponse(id="x", text="ok", finish_reason="stop", usage=Usage(), provider="fake", model="a",
                            upstream_model="a")  # fmt: skip


async def test_retry_after_is_honoured_before_the_same_model_is_tried_again():
    adapter = RateLimitedOnce({})
    pipeline = Pipeline(Registry(adapter), Pricer(), _policy())
    response = await pipeline.complete(ChatRequest(model="a", messages=[{"role": "user", "content": "x"}]))
    assert response.attempts == 2 and len(adapter.opened) == 2
    assert adapter.opened[1] - adapter.opened[0] >= 0.2  # waited as asked, did not hammer
