"""End to end: the official openai and anthropic SDKs, as gateway clients, on a model of each of the four providers."""

from __future__ import annotations

import json
import warnings

import anthropic
import pytest

from tests.serve.keys import OPS_KEY

pytestmark = pytest.mark.ray
warnings.filterwarnings("ignore", category=DeprecationWarning, module="anthropic")

MODELS = {"gpt-4o-mini": "openai", "claude-haiku-4-5": "anthropic", "gemini-2.5-flash": "gemini",
          "bedrock-claude-haiku": "bedrock@us-east-1"}  # fmt: skip
WEATHER_OPENAI = {"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip
WEATHER_ANTHROPIC = {"name": "get_weather", "description": "weather",
                     "input_schema": WEATHER_OPENAI["function"]["parameters"]}  # fmt: skip


@pytest.fixture()
def claude(gateway_url: str):
    with anthropic.Anthropic(base_url=gateway_url, api_key=OPS_KEY, max_retries=0, timeout=20) as client:
        yield client


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_chat_stream_and_tools(gw, model):
    messages = [{"role": "user", "content": f"hello {model}"}]
    raw = gw.chat.completions.with_raw_response.create(model=model, messages=messages)
    whole = raw.parse()
    assert raw.headers["x-gateway-provider"] == MODELS[model]
    assert whole.choices[0].message.content and whole.usage.completion_tokens > 0
    chunks = list(gw.chat.completions.create(model=model, messages=messages, stream=True,
                                             stream_options={"include_usage": True}))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    first = gw.chat.completions.create(model=model, tools=[WEATHER_OPENAI],
                                       messages=[{"role": "user", "content": "weather in Lima"}])  # fmt: skip
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    follow = [{"role": "user", "content": "weather in Lima"}, first.choices[0].message.model_dump(exclude_none=True),
              {"role": "tool", "tool_call_id": call.id, "content": "foggy"}]  # fmt: skip
    answer = gw.chat.completions.create(model=model, tools=[WEATHER_OPENAI], messages=follow)
    assert "foggy" in answer.choices[0].message.content


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_chat_stream_and_tools(claude, model):
    messages = [{"role": "user", "content": f"hi {model}"}]
    whole = claude.messages.create(model=model, max_tokens=300, messages=messages)
    with claude.messages.stream(model=model, max_tokens=300, messages=messages) as s:
        final = s.get_final_message()
    assert final.content[0].text == whole.content[0].text and final.stop_reason == "end_turn"
    first = claude.messages.create(model=model, max_tokens=300, tools=[WEATHER_ANTHROPIC],
                                   messages=[{"role": "user", "content": "weather in Lima"}])  # fmt: skip
    call = next(b for b in first.content if b.type == "tool_use")
    answer = claude.messages.create(model=model, max_tokens=300, tools=[WEATHER_ANTHROPIC], messages=[
        {"role": "user", "content": "weather in Lima"},
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "foggy"}]},
    ])  # fmt: skip
    assert "foggy" in answer.content[0].text
