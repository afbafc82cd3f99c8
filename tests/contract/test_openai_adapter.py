"""The OpenAI adapter through the official SDK against the emulator: translation, and each fault → its ErrorKind."""

from __future__ import annotations

import json

import pytest

from gateway.config import ModelEntry, ProviderConfig
from gateway.providers.base import Target
from gateway.providers.openai_provider import OpenAIProvider
from gateway.schema import (
    ChatRequest,
    EmbeddingsRequest,
    ErrorKind,
    FinishEvent,
    GatewayError,
    StartEvent,
    TextDelta,
    ToolCallDelta,
)

APIS = ["chat", "responses"]
WEATHER = {
    "name": "get_weather",
    "description": "weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture()
async def provider(emulator_url):
    p = OpenAIProvider(
        "openai",
        ProviderConfig(
            kind="openai",
            base_url=f"{emulator_url}/openai/v1",
            api_key="sk-test",
            timeouts={"connect": 2, "read": 1.0, "total": 10},
        ),
    )
    yield p
    await p.aclose()


def _target(api: str, fault: str | None = None) -> Target:
    base = "gpt-4o-mini" if api == "chat" else "gpt-4.1-mini"
    upstream = f"{base}-fault-{fault}" if fault else base
    return Target(upstream, "openai", ModelEntry(provider="openai", upstream=upstream, api=api))


def _req(text: str = "hello there", **kw) -> ChatRequest:
    return ChatRequest(model="m", messages=[{"role": "user", "content": text}], **kw)


async def _collect(provider, request, target):
    return [e async for e in provider.stream(request, target)]


@pytest.mark.parametrize("api", APIS)
async def test_stream_reassembles_to_complete(provider, api):
    whole = await provider.complete(_req(), _target(api))
    events = await _collect(provider, _req(), _target(api))
    assert isinstance(events[0], StartEvent) and isinstance(events[-1], FinishEvent)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == whole.text
    assert events[-1].usage == whole.usage and whole.usage.output_tokens > 0


@pytest.mark.parametrize("api", APIS)
async def test_tool_calls_both_ways(provider, api):
    req = _req("weather in Paris", tools=[WEATHER])
    whole = await provider.complete(req, _target(api))
    assert whole.finish_reason == "tool_calls" and whole.tool_calls[0].name == "get_weather"
    assert "city" in json.loads(whole.tool_calls[0].arguments)
    deltas = [e for e in await _collect(provider, req, _target(api)) if isinstance(e, ToolCallDelta)]
    assert deltas[0].name == "get_weather" and deltas[0].id
    assert json.loads("".join(d.arguments for d in deltas)) == json.loads(whole.tool_calls[0].arguments)
    follow = ChatRequest(
        model="m",
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "weather in Paris"},
            {"role": "assistant", "tool_calls": [whole.tool_calls[0].model_dump()]},
            {"role": "tool", "tool_call_id": whole.tool_calls[0].id, "content": "rainy"},
        ],
    )
    answer = await provider.complete(follow, _target(api))
    assert answer.finish_reason == "stop" and "rainy" in answer.text


@pytest.mark.parametrize("api", APIS)
async def test_max_tokens_finishes_with_length(provider, api):
    response = await provider.complete(_req(max_tokens=3), _target(api))
    assert response.finish_reason == "length" and response.usage.output_tokens == 3


async def test_json_mode_and_image_input(provider):
    json_answer = await provider.complete(_req("give json", response_format={"type": "json_object"}), _target("chat"))
    assert isinstance(json.loads(json_answer.text), dict)
    image = ChatRequest(
        model="m",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is it"},
                    {"type": "image", "data": "iVBORw0KGgo=", "media_type": "image/png"},
                ],
            }
        ],
    )
    with_image = await provider.complete(image, _target("chat"))
    without = await provider.complete(_req("what is it"), _target("chat"))
    assert with_image.usage.input_tokens > without.usage.input_tokens  # the image was sent and counted


async def test_embeddings_with_dimensions(provider):
    target = Target("e", "openai", ModelEntry(provider="openai", upstream="text-embedding-3-small", kind="embedding"))
    out = await provider.embed(EmbeddingsRequest(model="e", texts=("a", "b c"), dimensions=32), target)
    assert out.dimensions == 32 and len(out.vectors) == 2 and out.usage.input_tokens > 0
    assert abs(sum(x * x for x in out.vectors[0]) - 1) < 1e-3


PRE_STREAM_FAULTS = [
    ("429", ErrorKind.RATE_LIMITED),
    ("429-no-retry-after", ErrorKind.RATE_LIMITED),
    ("quota", ErrorKind.QUOTA_EXCEEDED),
    ("401", ErrorKind.AUTH),
    ("503", ErrorKind.OVERLOADED),
    ("reset", ErrorKind.CONNECTION),
    ("hang", ErrorKind.TIMEOUT),
    ("context-length", ErrorKind.CONTEXT_LENGTH),
]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(("fault", "kind"), PRE_STREAM_FAULTS)
async def test_faults_map_to_error_kinds(provider, api, fault, kind):
    with pytest.raises(GatewayError) as info:
        await provider.complete(_req(), _target(api, fault))
    assert info.value.kind is kind, info.value.message
    with pytest.raises(GatewayError) as info:
        await _collect(provider, _req(), _target(api, fault))
    assert info.value.kind is kind


async def test_retry_after_is_read_from_the_provider(provider):
    with pytest.raises(GatewayError) as info:
        await provider.complete(_req(), _target("chat", "429"))
    assert info.value.retry_after == pytest.approx(1.0)
    assert info.value.retryable and info.value.fallbackable


@pytest.mark.parametrize("api", APIS)
async def test_500_once_then_healthy(provider, api):
    req = _req(f"500 once {api}")
    with pytest.raises(GatewayError) as info:
        await provider.complete(req, _target(api, "500-once"))
    assert info.value.kind is ErrorKind.SERVER and info.value.retryable
    assert (await provider.complete(req, _target(api, "500-once"))).finish_reason == "stop"


@pytest.mark.parametrize("api", APIS)
async def test_content_filter_is_content_filtered_and_billed(provider, api):
    with pytest.raises(GatewayError) as info:
        await provider.complete(_req(), _target(api, "content-filter"))
    assert info.value.kind is ErrorKind.CONTENT_FILTERED and not info.value.retryable
    assert info.value.usage.input_tokens > 0  # the provider billed the prompt; so do we
    with pytest.raises(GatewayError) as info:
        await _collect(provider, _req(), _target(api, "content-filter"))
    assert info.value.kind is ErrorKind.CONTENT_FILTERED


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("fault", ["cut", "stall", "malformed", "no-done"])
async def test_broken_streams_are_truncated_never_finished(provider, api, fault):
    seen = []
    with pytest.raises(GatewayError) as info:
        async for event in provider.stream(_req(), _target(api, fault)):
            seen.append(event)
    assert info.value.kind is ErrorKind.TRUNCATED_STREAM, info.value.message
    assert not any(isinstance(e, FinishEvent) for e in seen)
    assert any(isinstance(e, TextDelta) for e in seen)  # it had started: content was lost, not absent
    assert info.value.usage is not None and info.value.usage.output_tokens > 0


@pytest.mark.parametrize("fault", ["cut", "stall"])
async def test_broken_non_streamed_bodies_are_errors(provider, fault):
    with pytest.raises(GatewayError) as info:
        await provider.complete(_req(), _target("chat", fault))
    assert info.value.kind in (ErrorKind.CONNECTION, ErrorKind.TIMEOUT)


async def test_slow_first_token_still_completes_within_read_timeout(provider):
    events = await _collect(provider, _req(), _target("chat", "slow-first-token"))
    assert isinstance(events[-1], FinishEvent)


async def test_usage_matches_the_emulators_billing_record(provider, emulator):
    text = "billing check unique words"
    response = await provider.complete(_req(text), _target("chat"))
    record = [b for b in emulator.recorder.billing if b.model == "gpt-4o-mini"][-1]
    assert (record.input_tokens, record.output_tokens) == (response.usage.input_tokens, response.usage.output_tokens)
