"""Llama and Mistral on Bedrock Converse, where they differ from Claude: what the emulator refuses the way Bedrock
does, and what the adapter does about it (fold the system prompt, replay a streamed tool call, plan around)."""

from __future__ import annotations

import json

import pytest

from gateway.schema import ChatRequest, FinishEvent, StartEvent, TextDelta, ToolCallDelta
from tests.contract.cases import CASES
from tests.contract.test_adapters import WEATHER

BY_ID = {c.id: c for c in CASES}
LLAMA, MISTRAL_7B, MISTRAL_LARGE, CLAUDE = (BY_ID[i] for i in ("bedrock-llama", "bedrock-mistral-7b",
                                                               "bedrock-mistral-large", "bedrock"))  # fmt: skip


def _req(text: str, **kw) -> ChatRequest:
    return ChatRequest(model="m", messages=[{"role": "user", "content": text}], **kw)


def _sent(emulator, marker: str):
    return [r for r in emulator.recorder.requests if marker in json.dumps(r.body)]


@pytest.fixture()
async def adapter(emulator_url):
    p = CLAUDE.provider(emulator_url)
    yield p
    await p.aclose()


async def test_a_system_prompt_reaches_a_model_without_one_as_the_first_user_turn(adapter, emulator):
    marker = "fold-marker-7b"
    request = ChatRequest(model="m", messages=[{"role": "system", "content": f"answer briefly {marker}"},
                                               {"role": "user", "content": "what is up"}])  # fmt: skip
    answer = await adapter.complete(request, MISTRAL_7B.target())
    assert answer.text and answer.finish_reason == "stop"
    (sent,) = _sent(emulator, marker)
    assert "system" not in sent.body  # Bedrock refuses a system field for Mistral 7B
    first = sent.body["messages"][0]
    assert first["role"] == "user" and marker in first["content"][0]["text"]
    assert first["content"][1]["text"] == "what is up"
    claude = await adapter.complete(request, CLAUDE.target())  # a model with system prompts keeps the field
    assert claude.text and "system" in _sent(emulator, marker)[-1].body


async def test_a_streamed_call_with_tools_on_llama_is_one_converse_call_replayed(adapter, emulator):
    marker = "replay weather in Paris"
    events = [e async for e in adapter.stream(_req(marker, tools=[WEATHER]), LLAMA.target())]
    assert isinstance(events[0], StartEvent) and isinstance(events[-1], FinishEvent)
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert len(calls) == 1 and calls[0].name == "get_weather" and "city" in json.loads(calls[0].arguments)
    assert events[-1].finish_reason == "tool_calls" and events[-1].usage.output_tokens > 0
    (sent,) = _sent(emulator, marker)
    assert sent.path.endswith("/converse")  # not converse-stream, which Bedrock refuses with tools for Llama
    assert "toolChoice" not in sent.body["toolConfig"]  # Llama takes no toolChoice; `auto` is its default
    plain = [e async for e in adapter.stream(_req("replay-free stream"), LLAMA.target())]
    assert _sent(emulator, "replay-free stream")[0].path.endswith("/converse-stream")  # no tools: a real stream
    assert "".join(e.text for e in plain if isinstance(e, TextDelta))


def test_what_a_family_cannot_take_is_planned_around_with_its_reason(adapter):
    json_mode = _req("x", response_format={"type": "json_object"})
    assert "JSON mode" in adapter.unsupported(json_mode, LLAMA.target())
    assert adapter.unsupported(json_mode, MISTRAL_LARGE.target()) is None  # Mistral Large takes a forced tool
    tools = _req("x", tools=[WEATHER])
    assert "takes no tools" in adapter.unsupported(tools, MISTRAL_7B.target())
    assert adapter.unsupported(tools, LLAMA.target()) is None
    required = _req("x", tools=[WEATHER], tool_choice="required")
    assert "required tool choice" in adapter.unsupported(required, LLAMA.target())
    assert adapter.unsupported(required, CLAUDE.target()) is None
