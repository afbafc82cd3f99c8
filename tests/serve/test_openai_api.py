"""End to end over HTTP on Ray: the official openai SDK, unchanged, against the gateway backed by the emulator."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import openai
import pytest

from tests.serve.conftest import get_json
from tests.serve.keys import AUTH

pytestmark = pytest.mark.ray

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _billing_for(emulator, model: str) -> list:
    return [b for b in emulator.recorder.billing if b.model == model]


def test_chat_matches_upstream_answer_and_usage(gw, upstream, emulator):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "tell me about ray serve"}]
    raw = gw.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    got = raw.parse()
    want = upstream.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert got.choices[0].message.content == want.choices[0].message.content
    assert got.choices[0].finish_reason == "stop"
    assert got.model == "gpt-4o-mini"
    assert (
        got.usage.prompt_tokens == want.usage.prompt_tokens
        and got.usage.completion_tokens == want.usage.completion_tokens
    )
    assert raw.headers["x-gateway-provider"] == "openai" and raw.headers["x-gateway-attempts"] == "1"
    # priced from the usage the provider reported: gpt-4o-mini at $0.15 / $0.60 per million tokens
    expected = (
        Decimal(want.usage.prompt_tokens) * Decimal("0.15") + Decimal(want.usage.completion_tokens) * Decimal("0.6")
    ) / 10**6
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == expected


def test_stream_reassembles_to_the_non_streamed_answer_with_usage(gw):
    messages = [{"role": "user", "content": "stream me something deterministic"}]
    whole = gw.chat.completions.create(model="gpt-4o-mini", messages=messages)
    chunks = list(
        gw.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_stream_without_include_usage_sends_no_usage_chunk_but_upstream_was_asked(gw, emulator):
    messages = [{"role": "user", "content": "no usage chunk please"}]
    chunks = list(gw.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
    assert all(c.choices for c in chunks)
    sent = [r for r in emulator.recorder.requests if isinstance(r.body, dict) and r.body.get("messages") == messages]
    assert sent[-1].body["stream_options"] == {"include_usage": True}  # forced upstream for exact billing


def test_tool_call_round_trip(gw):
    messages = [{"role": "user", "content": "what is the weather in Paris"}]
    first = gw.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny and 21C"},
    ]
    second = gw.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert "sunny and 21C" in second.choices[0].message.content


def test_streamed_tool_call_reassembles(gw):
    stream = gw.chat.completions.create(
        model="gpt-4o-mini", stream=True, tools=[WEATHER], messages=[{"role": "user", "content": "weather in Oslo"}]
    )
    name, args, finish = "", "", None
    for chunk in stream:
        for tc in chunk.choices[0].delta.tool_calls or ():
            name += tc.function.name or ""
            args += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_weather" and "city" in json.loads(args) and finish == "tool_calls"


def test_responses_api_model_through_chat_completions(gw, upstream):
    got = gw.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi there"}])
    want = upstream.responses.create(model="gpt-4.1-mini", input=[{"role": "user", "content": "hi there"}])
    assert got.choices[0].message.content == want.output_text
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in gw.chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi there"}], stream=True
        )
        if c.choices
    )
    assert streamed == want.output_text


def test_embeddings_default_base64_and_float(gw, upstream):
    texts = ["alpha", "beta gamma"]
    got = gw.embeddings.create(model="text-embedding-3-small", input=texts, dimensions=64)  # SDK sends base64
    want = upstream.embeddings.create(model="text-embedding-3-small", input=texts, dimensions=64)
    assert [len(d.embedding) for d in got.data] == [64, 64]
    assert got.data[1].embedding == pytest.approx(want.data[1].embedding, abs=1e-6)
    floats = gw.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="float")
    assert len(floats.data[0].embedding) == 1536


def test_models_health_and_readiness(gateway_url, gw):
    ids = {m.id for m in gw.models.list()}
    assert {"gpt-4o-mini", "text-embedding-3-small"} <= ids
    assert get_json(f"{gateway_url}/healthz") == {"status": "ok"}
    assert get_json(f"{gateway_url}/readyz")["status"] == "ready"


@pytest.mark.parametrize(
    ("fault", "exc", "status", "code"),
    [
        ("429", openai.RateLimitError, 429, "rate_limit_exceeded"),
        ("quota", openai.RateLimitError, 429, "insufficient_quota"),
        ("503", openai.InternalServerError, 503, "overloaded"),
        ("401", openai.InternalServerError, 502, "auth"),
        ("reset", openai.InternalServerError, 502, "connection"),
        ("hang", openai.APIStatusError, 504, "timeout"),
        ("context-length", openai.BadRequestError, 400, "context_length_exceeded"),
        ("content-filter", openai.BadRequestError, 400, "content_filter"),
    ],
)
def test_upstream_faults_become_openai_style_http_errors(gw, fault, exc, status, code):
    with pytest.raises(exc) as info:
        gw.chat.completions.create(model=f"gpt-4o-mini-fault-{fault}", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    assert info.value.code == code
    assert info.value.response.headers["x-gateway-provider"] == "openai"


def test_rate_limit_passes_retry_after_to_the_client(gw):
    with pytest.raises(openai.RateLimitError) as info:
        gw.chat.completions.create(model="gpt-4o-mini-fault-429", messages=[{"role": "user", "content": "x"}])
    assert int(info.value.response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("fault", ["cut", "malformed", "no-done", "stall"])
def test_broken_streams_end_with_an_error_never_a_finish(gw, fault):
    stream = gw.chat.completions.create(
        model=f"gpt-4o-mini-fault-{fault}", stream=True, messages=[{"role": "user", "content": "a long answer please"}]
    )
    seen_finish, text = [], ""
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].finish_reason:
                seen_finish.append(chunk.choices[0].finish_reason)
            text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert seen_finish == []
    # Content already delivered makes it a truncated answer; a break before any content (the reset can reach
    # the gateway together with the first chunks) is a connection error that later issues can fall back on.
    allowed = {"truncated_stream"} if text else {"truncated_stream", "connection"}
    assert info.value.type in allowed


def test_stream_fault_before_first_byte_is_an_http_error(gw):
    with pytest.raises(openai.RateLimitError):
        gw.chat.completions.create(
            model="gpt-4o-mini-fault-429", stream=True, messages=[{"role": "user", "content": "x"}]
        )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-4o-mini", "messages": []}, "messages"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "temperature": 9}, "temperature"),
        ({"model": "no-tools", "messages": [{"role": "user", "content": "x"}], "tools": [WEATHER]}, "tools"),
    ],
)
def test_bad_requests_get_400_naming_the_field(gateway_url, body, param):
    r = httpx.post(f"{gateway_url}/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


def test_unknown_model_is_404(gw):
    with pytest.raises(openai.NotFoundError) as info:
        gw.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"


def test_invalid_json_body(gateway_url):
    r = httpx.post(
        f"{gateway_url}/v1/chat/completions", content=b"{nope", headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
