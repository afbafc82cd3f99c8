"""The Anthropic Messages format both ways: inbound parsing (for /v1/messages) and the adapter's request body."""

import json

import pytest

from gateway.config import ModelEntry
from gateway.providers.anthropic_messages import messages_body, usage_of
from gateway.providers.base import Target
from gateway.schema import FinishEvent, GatewayError, StartEvent, TextDelta, ToolCallDelta, Usage
from gateway.wire import anthropic_in
from gateway.wire.anthropic_out import MessageStreamEncoder, usage_json

TOOL = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
CONVERSATION = {
    "model": "m", "max_tokens": 100, "system": [{"type": "text", "text": "be brief"}], "tools": [TOOL],
    "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "weather?"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": "iVBO"}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "checking"},
                                          {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "cold"},
                                     {"type": "text", "text": "and tomorrow?"}]},
    ],
}  # fmt: skip


def test_inbound_messages_become_normalized_turns_in_order():
    request = anthropic_in.parse_messages(CONVERSATION, {"x-gateway-daemon": "evaluator"})
    roles = [m.role for m in request.messages]
    assert roles == ["system", "user", "assistant", "tool", "user"]  # tool result before the user's follow-up text
    assert request.messages[2].tool_calls[0].arguments == '{"city": "Oslo"}'
    assert request.messages[3].tool_call_id == "toolu_1" and request.messages[3].content == "cold"
    assert request.tool_choice.name == "get_weather" and request.parallel_tool_calls is False
    assert request.metadata.daemon == "evaluator" and request.max_tokens == 100


def test_adapter_body_round_trips_the_same_conversation():
    request = anthropic_in.parse_messages(CONVERSATION, {})
    body = messages_body(request, Target("m", "anthropic", ModelEntry(provider="anthropic", upstream="claude-x")),
                         stream=False)  # fmt: skip
    assert body["system"] == "be brief" and body["max_tokens"] == 100
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]  # tool result + text merged
    assert body["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_1", "content": "cold"}
    assert body["messages"][1]["content"][1]["input"] == {"city": "Oslo"}
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    assert body["tools"][0]["input_schema"] == TOOL["input_schema"]


@pytest.mark.parametrize(
    ("change", "param"),
    [({"max_tokens": None}, "max_tokens"), ({"messages": []}, "messages"), ({"top_q": 1}, "top_q"),
     ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type")],
)  # fmt: skip
def test_bad_inbound_requests_name_the_field(change, param):
    with pytest.raises(GatewayError) as info:
        anthropic_in.parse_messages({**CONVERSATION, **change}, {})
    assert info.value.param == param


def test_cache_usage_converts_both_ways():
    usage = usage_of({"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5,
                      "output_tokens": 7})  # fmt: skip
    assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens) == (115, 100, 5)
    assert usage_json(usage) == {"input_tokens": 10, "output_tokens": 7, "cache_creation_input_tokens": 5,
                                 "cache_read_input_tokens": 100}  # fmt: skip


def _events(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for frame in raw.decode().strip().split("\n\n"):
        name, data = frame.split("\n")
        out.append((name[len("event: ") :], json.loads(data[len("data: ") :])))
    return out


def test_stream_encoder_opens_and_closes_content_blocks():
    enc = MessageStreamEncoder()
    raw = b"".join(enc.encode(e) for e in [
        StartEvent(id="msg_1", provider="p", model="m", upstream_model="u"), TextDelta(text="Let me "),
        TextDelta(text="check."), ToolCallDelta(index=0, id="call_1", name="get_weather"),
        ToolCallDelta(index=0, arguments='{"city":'), ToolCallDelta(index=0, arguments='"Oslo"}'),
        FinishEvent(finish_reason="tool_calls", usage=Usage(input_tokens=5, output_tokens=9)),
    ])  # fmt: skip
    names = [n for n, _ in _events(raw)]
    assert names == ["message_start", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
    events = _events(raw)
    assert events[5][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}
    assert events[9][1]["delta"]["stop_reason"] == "tool_use" and events[9][1]["usage"]["output_tokens"] == 9
