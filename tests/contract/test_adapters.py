"""One contract suite for every provider adapter, through its official SDK against its emulator.

Every case runs against every provider; a provider that lacks a capability is skipped with
that reason. Faults come from the shared catalogue, each in the provider's own wire format.
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from gateway.emulators import Emulator, EmulatorSettings
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
from tests.contract.cases import CASES, Case

WEATHER = {
    "name": "get_weather",
    "description": "weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME = {"name": "get_time", "description": "time", "parameters": {"type": "object", "properties": {}}}


@pytest.fixture(params=CASES, ids=lambda c: c.id)
def case(request) -> Case:
    return request.param


@pytest.fixture()
async def provider(case: Case, emulator_url: str):
    p = case.provider(emulator_url)
    yield p
    await p.aclose()


def need(case: Case, capability: str) -> None:
    if capability not in case.caps:
        pytest.skip(f"{case.id} does not offer {capability}")


def _req(text: str = "hello there", **kw) -> ChatRequest:
    return ChatRequest(model="m", messages=[{"role": "user", "content": text}], **kw)


async def _collect(provider, request, target):
    return [e async for e in provider.stream(request, target)]


def _text(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_plain_chat_and_stream_reassembly(provider, case):
    whole = await provider.complete(_req(), case.target())
    assert whole.text and whole.finish_reason == "stop" and whole.provider.startswith(case.id)  # bedrock@region
    events = await _collect(provider, _req(), case.target())
    assert isinstance(events[0], StartEvent) and isinstance(events[-1], FinishEvent)
    assert _text(events) == whole.text
    assert events[-1].usage == whole.usage and whole.usage.input_tokens > 0 and whole.usage.output_tokens > 0


async def test_system_prompt_and_multi_turn_are_sent(provider, case, emulator):
    marker = f"system-marker-{case.id}"
    request = ChatRequest(model="m", messages=[
        {"role": "system", "content": f"be brief {marker}"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ])  # fmt: skip
    answer = await provider.complete(request, case.target())
    shorter = await provider.complete(_req("second question"), case.target())
    assert answer.usage.input_tokens > shorter.usage.input_tokens  # the system prompt and history were counted
    sent = [r for r in emulator.recorder.requests if marker in json.dumps(r.body)]
    assert sent, "the system prompt never reached the provider"


async def test_configured_headers_reach_the_provider_on_every_call(case, emulator, emulator_url):
    if case.kind == "bedrock":
        pytest.skip("Bedrock requests are signed: extra headers are refused by the config")
    p = case.provider(emulator_url, headers={"x-emulator-tokens": "7", "OpenAI-Project": f"proj-{case.id}"})
    try:
        answer = await p.complete(_req(f"headers probe {case.id}"), case.target())
        streamed = await _collect(p, _req(f"headers probe {case.id}"), case.target())
    finally:
        await p.aclose()
    assert answer.usage.output_tokens - answer.usage.reasoning_tokens == 7  # the emulator obeyed the header
    assert len(_text(streamed).split()) == 7  # seven tokens (the emulator's are words), in however many deltas
    sent = [r for r in emulator.recorder.requests if f"headers probe {case.id}" in json.dumps(r.body)]
    assert sent and all(r.headers.get("openai-project", r.headers.get("OpenAI-Project")) == f"proj-{case.id}"
                        for r in sent)  # fmt: skip


async def test_tool_call_and_result_round_trip(provider, case):
    need(case, "tools")
    req = _req("weather in Paris", tools=[WEATHER])
    whole = await provider.complete(req, case.target())
    assert whole.finish_reason == "tool_calls" and whole.tool_calls[0].name == "get_weather"
    assert "city" in json.loads(whole.tool_calls[0].arguments)
    deltas = [e for e in await _collect(provider, req, case.target()) if isinstance(e, ToolCallDelta)]
    assert deltas[0].name == "get_weather" and deltas[0].id
    assert json.loads("".join(d.arguments for d in deltas)) == json.loads(whole.tool_calls[0].arguments)
    call = whole.tool_calls[0]
    follow = ChatRequest(model="m", tools=[WEATHER], messages=[
        {"role": "user", "content": "weather in Paris"},
        {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "rainy"},
    ])  # fmt: skip
    answer = await provider.complete(follow, case.target())
    assert answer.finish_reason == "stop" and "rainy" in answer.text


async def test_strict_json_schemas_are_accepted_everywhere(provider, case):
    need(case, "tools")
    strict = {"name": "book", "description": "book a table", "parameters": {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
        "properties": {"guests": {"type": "integer", "exclusiveMinimum": 0},
                       "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                       "when": {"$ref": "#/$defs/slot"}},
        "required": ["guests", "when"], "$defs": {"slot": {"type": "string", "format": "date-time"}}}}  # fmt: skip
    answer = await provider.complete(_req("book a table", tools=[strict]), case.target())
    assert answer.tool_calls[0].name == "book"  # Gemini refuses these keywords unless the adapter sanitizes them


async def test_reasoning_tokens_count_as_output(provider, case):
    need(case, "reasoning")
    answer = await provider.complete(_req("think first"), case.target())
    assert 0 < answer.usage.reasoning_tokens < answer.usage.output_tokens


async def test_automatic_prompt_caching_is_reported_as_cached_input(provider, case):
    need(case, "auto_cache")
    system = " ".join(f"rule{i} for {case.id}" for i in range(100))  # a long, identical prefix, sent twice
    request = ChatRequest(
        model="m", messages=[{"role": "system", "content": system}, {"role": "user", "content": "hi"}]
    )
    first = await provider.complete(request, case.target())
    second = await provider.complete(request, case.target())
    assert first.usage.cached_input_tokens == 0
    assert 0 < second.usage.cached_input_tokens <= second.usage.input_tokens == first.usage.input_tokens


async def test_provider_token_count_matches_what_a_call_reports(provider, case):
    if not hasattr(provider, "count_tokens"):
        pytest.skip(f"{case.id} has no token-counting endpoint")
    request = ChatRequest(model="m", messages=[{"role": "user", "content": "count these few words please"}])
    counted = await provider.count_tokens(request, case.target())
    assert counted > 0 and counted == (await provider.complete(request, case.target())).usage.input_tokens


async def test_parallel_tool_calls(provider, case):
    need(case, "parallel_tools")
    whole = await provider.complete(_req("parallel: weather and time please", tools=[WEATHER, TIME]), case.target())
    assert sorted(c.name for c in whole.tool_calls) == ["get_time", "get_weather"]
    assert len({c.id for c in whole.tool_calls}) == 2


async def test_image_input_is_sent_and_counted(provider, case):
    need(case, "images")
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
    with_image = await provider.complete(image, case.target())
    without = await provider.complete(_req("what is it"), case.target())
    assert with_image.usage.input_tokens > without.usage.input_tokens


async def test_json_mode(provider, case):
    need(case, "json")
    answer = await provider.complete(_req("give json", response_format={"type": "json_object"}), case.target())
    assert isinstance(json.loads(answer.text), dict) and answer.finish_reason == "stop"
    streamed = await _collect(provider, _req("give json", response_format={"type": "json_object"}), case.target())
    assert json.loads(_text(streamed)) == json.loads(answer.text)


async def test_max_tokens_finishes_with_length(provider, case):
    short = await provider.complete(_req(max_tokens=3), case.target())
    assert short.finish_reason == "length" and short.usage.output_tokens == 3


async def test_stop_sequence(provider, case):
    if "stop" not in case.caps:  # refused by name rather than silently ignored
        with pytest.raises(GatewayError) as info:
            await provider.complete(_req("stop test", stop=["x"]), case.target())
        assert info.value.kind is ErrorKind.BAD_REQUEST and info.value.param == "stop"
        return
    full = await provider.complete(_req("stop test"), case.target())
    word = full.text.split()[3]
    stopped = await provider.complete(_req("stop test", stop=[word]), case.target())
    assert stopped.finish_reason == "stop" and word not in stopped.text and len(stopped.text) < len(full.text)


async def test_embeddings_with_target_dimensions(provider, case):
    need(case, "embeddings")
    request = EmbeddingsRequest(model="e", texts=("a", "b c"), dimensions=case.embedding_dims)
    out = await provider.embed(request, case.embedding_target())
    assert out.dimensions == case.embedding_dims and len(out.vectors) == 2 and out.usage.input_tokens > 0
    assert abs(sum(x * x for x in out.vectors[0]) - 1) < 1e-3


async def test_embeddings_for_queries_and_documents(provider, case, emulator):
    need(case, "embeddings")
    vectors = {}
    for kind in ("query", "document"):
        request = EmbeddingsRequest(model="e", texts=(f"input type probe {case.id}",), input_type=kind)
        vectors[kind] = (await provider.embed(request, case.embedding_target())).vectors[0]
        assert len(vectors[kind]) > 0
    if case.kind == "gemini":  # Gemini tunes the vector to the task: the two must differ
        assert vectors["query"] != vectors["document"]
        sent = [r.body for r in emulator.recorder.requests if f"input type probe {case.id}" in str(r.body)]
        assert {req["taskType"] for b in sent for req in b["requests"]} == {"RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT"}


async def test_usage_matches_the_emulators_billing_record(provider, case, emulator):
    text = f"billing check {case.id}"
    response = await provider.complete(_req(text), case.target())
    record = [b for b in emulator.recorder.billing if b.model == case.model][-1]
    assert response.usage.cached_input_tokens == 0  # no caching here, so every convention agrees on the input
    assert (record.input_tokens, record.output_tokens) == (response.usage.input_tokens, response.usage.output_tokens)


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


@pytest.mark.parametrize(("fault", "kind"), PRE_STREAM_FAULTS)
async def test_faults_map_to_error_kinds(provider, case, fault, kind):
    expected = case.expected(fault, kind)
    with pytest.raises(GatewayError) as info:
        await provider.complete(_req(), case.target(fault))
    assert info.value.kind is expected, info.value.message
    with pytest.raises(GatewayError) as info:
        await _collect(provider, _req(), case.target(fault))
    assert info.value.kind is expected


async def test_retry_after_is_read_from_the_provider(provider, case):
    with pytest.raises(GatewayError) as info:
        await provider.complete(_req(), case.target("429"))
    assert info.value.retry_after == (pytest.approx(1.0) if case.sends_retry_after else None)
    assert info.value.retryable and info.value.fallbackable


async def test_500_once_then_healthy(provider, case):
    req = _req(f"500 once {case.id}")
    with pytest.raises(GatewayError) as info:
        await provider.complete(req, case.target("500-once"))
    assert info.value.kind is ErrorKind.SERVER and info.value.retryable
    assert (await provider.complete(req, case.target("500-once"))).finish_reason == "stop"


async def test_content_filter_is_content_filtered_and_billed(provider, case):
    with pytest.raises(GatewayError) as info:
        await provider.complete(_req(), case.target("content-filter"))
    assert info.value.kind is ErrorKind.CONTENT_FILTERED and not info.value.retryable
    assert info.value.usage.input_tokens > 0  # the provider billed the prompt; so do we
    with pytest.raises(GatewayError) as info:
        await _collect(provider, _req(), case.target("content-filter"))
    assert info.value.kind is ErrorKind.CONTENT_FILTERED


@pytest.mark.parametrize("fault", ["cut", "stall", "malformed", "no-done"])
async def test_broken_streams_are_truncated_never_finished(provider, case, fault):
    seen = []
    with pytest.raises(GatewayError) as info:
        async for event in provider.stream(_req(), case.target(fault)):
            seen.append(event)
    assert info.value.kind is ErrorKind.TRUNCATED_STREAM, info.value.message
    assert not any(isinstance(e, FinishEvent) for e in seen)
    assert any(isinstance(e, TextDelta) for e in seen)  # it had started: content was lost, not absent
    assert info.value.usage is not None and info.value.usage.output_tokens > 0


async def test_the_providers_own_midstream_error_is_a_truncated_stream(provider, case):
    if case.midstream_fault is None:
        pytest.skip(f"{case.id} has no in-stream error event of its own")
    seen = []
    with pytest.raises(GatewayError) as info:
        async for event in provider.stream(_req(), case.target(case.midstream_fault)):
            seen.append(event)
    assert info.value.kind is ErrorKind.TRUNCATED_STREAM and info.value.provider_code  # the provider's error type
    assert any(isinstance(e, TextDelta) for e in seen) and not any(isinstance(e, FinishEvent) for e in seen)


async def test_the_providers_own_safety_outcomes_are_content_filtered(provider, case):
    if not case.safety_faults:
        pytest.skip(f"{case.id} has no safety outcome beyond its content filter")
    for fault in case.safety_faults:
        with pytest.raises(GatewayError) as info:
            await provider.complete(_req(), case.target(fault))
        assert info.value.kind is ErrorKind.CONTENT_FILTERED and info.value.provider_code, fault
        assert not info.value.retryable


@pytest.mark.parametrize("fault", ["cut", "stall"])
async def test_broken_non_streamed_bodies_are_errors(provider, case, fault):
    with pytest.raises(GatewayError) as info:
        await provider.complete(_req(), case.target(fault))
    # a cut body: a connection error, or (Bedrock: botocore swallows it) an incomplete answer — retryable either way
    assert info.value.kind in (ErrorKind.CONNECTION, ErrorKind.TIMEOUT, ErrorKind.INVALID_RESPONSE)
    assert info.value.retryable


async def test_slow_first_token_still_completes_within_read_timeout(provider, case):
    events = await _collect(provider, _req(), case.target("slow-first-token"))
    assert isinstance(events[-1], FinishEvent)


async def test_a_complete_stream_without_its_terminal_marker_is_complete(provider, case):
    """Finish and usage arrived, then the body ended cleanly without `[DONE]` / message_stop: the answer is whole,
    so it finishes (a fallback would bill a second call for nothing)."""
    if not (case.kind == "anthropic" or (case.kind == "openai" and case.api == "chat")):
        pytest.skip(f"{case.id} sends its finish or usage in its last event: without it the stream is incomplete")
    events = await _collect(provider, _req(), case.target("no-marker"))
    finish = events[-1]
    assert isinstance(finish, FinishEvent) and finish.finish_reason == "stop"
    assert finish.usage.output_tokens > 0 and _text(events)


@pytest.mark.parametrize("pooled", [1, 8])
async def test_a_call_after_the_upstream_restarted_is_not_failed_by_a_stale_pooled_socket(case, pooled):
    """The upstream restarts on the same port between calls: every pooled keep-alive socket is dead, and each
    call after it is sent again on a fresh one instead of failing with a connection error (with 8 pooled
    sockets, a resend on another pooled one would meet a dead socket again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    first = Emulator(EmulatorSettings())
    first.start_in_thread("127.0.0.1", port)
    provider = case.provider(url)
    try:
        await asyncio.gather(*(provider.complete(_req(f"before {i}"), case.target()) for i in range(pooled)))
        first.stop_thread()
        second = Emulator(EmulatorSettings())
        second.start_in_thread("127.0.0.1", port)
        try:
            answers = await asyncio.gather(
                *(provider.complete(_req(f"after the restart {i}"), case.target()) for i in range(pooled))
            )
            assert all(a.text for a in answers)
        finally:
            second.stop_thread()
    finally:
        await provider.aclose()
