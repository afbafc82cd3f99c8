"""End to end: the official `anthropic` SDK, unchanged, against the gateway's `/v1/messages` (any provider's model)."""

from __future__ import annotations

import warnings

import anthropic
import httpx
import pytest

from tests.serve.keys import AUTH, OPS_KEY

pytestmark = pytest.mark.ray
warnings.filterwarnings("ignore", category=DeprecationWarning, module="anthropic")

WEATHER = {
    "name": "get_weather",
    "description": "current weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture()
def claude(gateway_url: str):
    with anthropic.Anthropic(base_url=gateway_url, api_key=OPS_KEY, max_retries=0, timeout=20) as client:
        yield client


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_messages_on_an_openai_model_match_the_upstream_answer(claude, upstream):
    got = claude.messages.create(
        model="gpt-4o-mini", max_tokens=200, system="be brief", messages=_user("hello through the anthropic api")
    )
    want = upstream.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello through the anthropic api"},
        ],
    )
    assert got.content[0].text == want.choices[0].message.content
    assert got.stop_reason == "end_turn" and got.model == "gpt-4o-mini"
    assert got.usage.input_tokens == want.usage.prompt_tokens
    assert got.usage.output_tokens == want.usage.completion_tokens


def test_streaming_final_message_equals_the_non_streamed_one(claude):
    whole = claude.messages.create(model="gpt-4o-mini", max_tokens=200, messages=_user("stream via anthropic"))
    with claude.messages.stream(model="gpt-4o-mini", max_tokens=200, messages=_user("stream via anthropic")) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == whole.content[0].text == final.content[0].text
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        whole.usage.input_tokens,
        whole.usage.output_tokens,
    )


def test_tool_use_round_trip_streamed_and_not(claude):
    first = claude.messages.create(
        model="gpt-4o-mini", max_tokens=200, tools=[WEATHER], messages=_user("weather in Rome")
    )
    call = next(b for b in first.content if b.type == "tool_use")
    assert first.stop_reason == "tool_use" and call.name == "get_weather" and "city" in call.input
    with claude.messages.stream(
        model="gpt-4o-mini", max_tokens=200, tools=[WEATHER], messages=_user("weather in Rome")
    ) as s:
        final = s.get_final_message()
    streamed = next(b for b in final.content if b.type == "tool_use")
    assert streamed.name == "get_weather" and streamed.input == call.input
    answer = claude.messages.create(
        model="gpt-4o-mini",
        max_tokens=200,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "weather in Rome"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "hot and dry"}]},
        ],
    )
    assert answer.stop_reason == "end_turn" and "hot and dry" in answer.content[0].text


@pytest.mark.parametrize(
    ("model", "exc", "status"),
    [
        ("gpt-9", anthropic.NotFoundError, 404),
        ("gpt-4o-mini-fault-429", anthropic.RateLimitError, 429),
        ("gpt-4o-mini-fault-503", anthropic.InternalServerError, 529),
        ("gpt-4o-mini-fault-context-length", anthropic.BadRequestError, 400),
    ],
)
def test_errors_come_back_in_anthropic_format(claude, model, exc, status):
    with pytest.raises(exc) as info:
        claude.messages.create(model=model, max_tokens=50, messages=_user("x"))
    assert info.value.status_code == status
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"]


def test_a_broken_stream_raises_in_the_sdk_and_never_finishes(claude):
    with pytest.raises(anthropic.APIStatusError) as info:
        with claude.messages.stream(model="gpt-4o-mini-fault-cut", max_tokens=200, messages=_user("cut")) as s:
            for _ in s.text_stream:
                pass
    assert info.value.body["error"]["type"] == "api_error"


def test_missing_max_tokens_is_a_400_naming_it(gateway_url):
    r = httpx.post(f"{gateway_url}/v1/messages", json={"model": "gpt-4o-mini", "messages": _user("x")}, headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error" and "max_tokens" in r.json()["error"]["message"]
