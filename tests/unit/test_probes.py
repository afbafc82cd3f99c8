"""A new user's probes of the offline gateway (issue 11): the pipeline on the bundled config and routing policy,
through the real adapters and SDKs against the session emulator. Each asks for an answer another candidate could
give, or for a limit the caller set, and checks the gateway gives it."""

from __future__ import annotations

import base64
import socket
from decimal import Decimal

import pytest

from gateway.config import BedrockRegion, GatewayConfig, load_config
from gateway.pipeline import Pipeline
from gateway.pricing import Pricer, load_price_table
from gateway.providers.bedrock_provider import BedrockProvider
from gateway.providers.registry import ProviderRegistry
from gateway.routing.policy import load_policy
from gateway.runner import RunOptions
from gateway.schema import ChatRequest, EmbeddingsRequest, ErrorKind, GatewayError, Usage
from gateway.tokens import TokenEstimator
from gateway.wire import openai_out
from tests.support import catalog_with_faults

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
URL_IMAGE = {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                         {"type": "image", "url": "https://example.com/cat.png"}]}  # fmt: skip


def _config(emulator_url: str, regions: tuple[BedrockRegion, ...] | None = None) -> GatewayConfig:
    """The bundled config (offline, on the session emulator), with the tests' fault models and the Bedrock regions
    given."""
    data = load_config().model_dump()
    faults = {m: e for m, e in catalog_with_faults().items() if "-fault-" in m}
    data["models"] = {**data["models"], **faults}
    config = GatewayConfig.model_validate({**data, "offline": True}).resolved(emulator_url)
    if regions is None:
        return config
    bedrock = config.providers["bedrock"].model_copy(update={"regions": regions})
    return config.model_copy(update={"providers": {**config.providers, "bedrock": bedrock}})


def _pipeline(config: GatewayConfig) -> Pipeline:
    policy = load_policy(config.routing_policy, config.models)
    pricer = Pricer(load_price_table("policies/prices.yaml"))
    return Pipeline(ProviderRegistry(config), pricer, policy)


@pytest.fixture()
async def offline(emulator_url: str):
    pipeline = _pipeline(_config(emulator_url))
    yield pipeline
    await pipeline.aclose()


async def test_auto_with_an_image_url_is_planned_around_bedrock_and_answered(offline):
    request = ChatRequest(model="auto", messages=[URL_IMAGE])
    plan = offline.plan(request)
    skipped = dict(plan.skipped)
    assert "bedrock-claude-3-haiku" in skipped and "URL" in skipped["bedrock-claude-3-haiku"]
    assert plan.candidates[0].model == "claude-haiku-4-5"
    answer = await offline.complete(request)
    assert answer.text and answer.model == "claude-haiku-4-5"


async def test_auto_with_an_inline_image_still_starts_with_bedrock(offline):
    inline = {"role": "user", "content": [{"type": "image", "data": PNG, "media_type": "image/png"}]}
    plan = offline.plan(ChatRequest(model="auto", messages=[inline]))
    assert plan.candidates[0].model == "bedrock-claude-3-haiku"


async def test_embeddings_auto_with_768_dimensions_skips_titan_and_answers_from_openai(offline):
    response = await offline.embed(EmbeddingsRequest(model="auto", texts=("a", "b"), dimensions=768))
    assert response.model == "text-embedding-3-small" and response.dimensions == 768
    assert response.route is not None and "titan" not in response.route


async def test_embeddings_auto_with_a_titan_size_still_uses_titan(offline):
    response = await offline.embed(EmbeddingsRequest(model="auto", texts=("a",), dimensions=512))
    assert response.model == "titan-embed-text-v2" and response.dimensions == 512


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_bedrock_model_fails_over_to_the_next_region(emulator_url, emulator):
    """Region 1 cannot be reached (its endpoint is down); the same model answers from region 2."""
    regions = (BedrockRegion(name="us-east-1"), BedrockRegion(name="eu-west-1"))
    config = _config(emulator_url, regions)
    pipeline = _pipeline(config)
    dead = config.providers["bedrock"].model_copy(update={"base_url": f"http://127.0.0.1:{_dead_port()}"})
    pipeline._registry._providers["bedrock@us-east-1"] = BedrockProvider("bedrock@us-east-1", dead, regions[0])
    try:
        answer = await pipeline.complete(ChatRequest(model="bedrock-claude-3-haiku", messages=[
            {"role": "user", "content": "region probe"}]))  # fmt: skip
        assert answer.provider == "bedrock@eu-west-1" and answer.attempts >= 2
        record = next(r for r in reversed(emulator.recorder.requests) if "region probe" in str(r.body))
        assert record.region == "eu-west-1"
    finally:
        await pipeline.aclose()


async def test_a_bedrock_model_skips_a_region_whose_breaker_is_open(offline, emulator_url):
    pipeline = _pipeline(_config(emulator_url, (BedrockRegion(name="us-east-1"), BedrockRegion(name="eu-west-1"))))
    try:
        breaker = pipeline.breakers.get("bedrock@us-east-1", "bedrock-claude-3-haiku")
        for _ in range(breaker.threshold):
            breaker.failure()
        answer = await pipeline.complete(ChatRequest(model="bedrock-claude-3-haiku", messages=[
            {"role": "user", "content": "hi"}]))  # fmt: skip
        assert answer.provider == "bedrock@eu-west-1" and answer.attempts == 1
    finally:
        await pipeline.aclose()


def test_a_pipeline_given_both_a_policy_and_a_control_plane_refuses(offline, emulator_url):
    config = _config(emulator_url)
    with pytest.raises(TypeError):
        Pipeline(ProviderRegistry(config), Pricer(), load_policy(config.routing_policy, config.models),
                 control=offline.control)  # fmt: skip


def test_run_options_are_frozen():
    options = RunOptions(stream=False, deadline=1.0, tokens=lambda: 1)
    with pytest.raises(AttributeError):
        options.stream = True  # type: ignore[misc]


async def test_the_final_error_carries_every_attempt(offline):
    request = ChatRequest(model="gpt-4o-mini-fault-503", fallbacks=("gpt-4o-mini-fault-quota",),
                          messages=[{"role": "user", "content": "hi"}])  # fmt: skip
    with pytest.raises(GatewayError) as info:
        await offline.complete(request)
    error = info.value
    assert [a.model for a in error.history][-1] == "gpt-4o-mini-fault-quota" and len(error.history) >= 2
    assert {a.model for a in error.history} == {"gpt-4o-mini-fault-503", "gpt-4o-mini-fault-quota"}
    body = openai_out.error_body(error)["error"]
    assert [a["model"] for a in body["attempts"]] == [a.model for a in error.history]


# --- the per-call budget (gateway.budget) -------------------------------------------------------------------------
def _ask(budget: dict, **kw) -> ChatRequest:
    return ChatRequest(model="gpt-4o-mini", messages=[{"role": "user", "content": "tell me a long story"}],
                       metadata={"budget": budget}, **kw)  # fmt: skip


async def test_a_call_budget_in_tokens_caps_an_unset_max_tokens_and_says_so(offline):
    answer = await offline.complete(_ask({"max_tokens": 40}))
    assert answer.usage.total_tokens <= 40 and answer.budget is not None and "cap max_tokens=" in answer.budget


async def test_a_call_budget_refuses_a_max_tokens_that_does_not_fit(offline):
    with pytest.raises(GatewayError) as info:
        await offline.complete(_ask({"max_tokens": 40}, max_tokens=500))
    assert info.value.kind is ErrorKind.BUDGET_EXCEEDED and info.value.status_code == 402
    assert info.value.param == "gateway.budget"


async def test_a_call_budget_with_shrink_lowers_max_tokens_instead(offline):
    answer = await offline.complete(_ask({"max_tokens": 40, "on_exceed": "shrink"}, max_tokens=500))
    assert answer.usage.total_tokens <= 40 and "shrink max_tokens=" in (answer.budget or "")


async def test_a_call_budget_in_dollars_refuses_a_prompt_that_alone_costs_more(offline):
    with pytest.raises(GatewayError) as info:
        await offline.complete(_ask({"max_cost_usd": "0.0000001"}))
    assert info.value.kind is ErrorKind.BUDGET_EXCEEDED


async def test_a_streamed_call_is_cut_at_its_budget_with_budget_exceeded(offline):
    """The budget pays for ~30 output tokens; the caller asked for 400 and said shrink, and the stream stops at
    the budget with finish_reason budget_exceeded, billed no more than the budget."""
    limit = Decimal("0.00002")
    request = _ask({"max_cost_usd": str(limit), "on_exceed": "shrink"}, max_tokens=400, stream=True)
    events = [e async for e in offline.stream(request)]
    finish = events[-1]
    assert finish.type == "finish" and finish.finish_reason in ("length", "budget_exceeded")
    relayed = sum(TokenEstimator().count_text(e.text) for e in events if e.type == "text_delta")
    entry = offline._registry.catalog["gpt-4o-mini"]
    assert offline._price(entry, Usage(input_tokens=finish.usage.input_tokens, output_tokens=relayed)) <= limit
    # billed: what was relayed, and at most the one delta that crossed the limit (read, not relayed)
    assert events[0].budget is not None and "max_cost_usd=" in events[0].budget


async def test_a_stream_with_output_past_the_call_budget_is_cut(offline):
    """A model that ignores max_tokens (a Bedrock Llama, say) is still stopped by the relay's own count."""
    from gateway.call_budget import apply_call_budget

    request = _ask({"max_tokens": 30}, stream=True)
    entries = {"gpt-4o-mini": offline._registry.catalog["gpt-4o-mini"]}
    _, _, limits = apply_call_budget(request, entries, offline._price, lambda n, e: 10)
    assert limits.output_limit("gpt-4o-mini", entries["gpt-4o-mini"]) == 20
    assert limits.output_limit("gpt-4o-mini", entries["gpt-4o-mini"], input_tokens=31) == -1


async def test_a_call_budget_on_embeddings_refuses_inputs_that_cost_more(offline):
    with pytest.raises(GatewayError) as info:
        await offline.embed(EmbeddingsRequest(model="text-embedding-3-small", texts=("word " * 200,),
                                              metadata={"budget": {"max_tokens": 10}}))  # fmt: skip
    assert info.value.kind is ErrorKind.BUDGET_EXCEEDED
