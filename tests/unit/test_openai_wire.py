"""The OpenAI-compatible inbound format: parsing into the schema (errors name the field) and encoding back out."""

import base64
import json
import struct

import pytest

from gateway.config import ModelEntry
from gateway.providers.base import Target
from gateway.providers.openai_chat import chat_params
from gateway.providers.openai_responses import responses_params
from gateway.schema import (
    ChatResponse,
    EmbeddingsResponse,
    ErrorEvent,
    FinishEvent,
    GatewayError,
    StartEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from gateway.wire import openai_in, openai_out

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "w",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def _body(**kw):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **kw}


def _target(api="chat"):
    return Target("gpt-4o-mini", "openai", ModelEntry(provider="openai", upstream="gpt-4o-mini-up", api=api))


def test_full_openai_request_round_trips_to_upstream_params():
    body = _body(
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=50,
        stop="END",
        temperature=0.2,
        response_format={"type": "json_object"},
    )
    request, include_usage = openai_in.parse_chat(body, {"x-gateway-daemon": "executor", "x-gateway-turn-id": "t9"})
    assert not include_usage
    assert request.metadata.daemon == "executor" and request.metadata.turn_id == "t9"
    assert request.messages[0].role == "system"
    image = request.messages[1].content[1]
    assert (image.data, image.media_type, image.detail) == ("iVBO", "image/png", "low")
    params = chat_params(request, _target(), stream=True)
    assert params["model"] == "gpt-4o-mini-up"
    assert params["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"},
    }
    assert params["messages"][2]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert params["messages"][3] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
    assert params["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert params["max_completion_tokens"] == 50 and params["stop"] == ["END"]
    assert params["stream_options"] == {"include_usage": True}  # forced even though the client did not ask
    assert params["response_format"] == {"type": "json_object"}


def test_responses_api_params_are_flat_with_instructions():
    request, _ = openai_in.parse_chat(
        _body(
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ],
            tools=TOOLS,
            max_tokens=20,
        ),
        {},
    )
    params = responses_params(request, _target("responses"), stream=False)
    assert params["instructions"] == "be brief"
    assert params["max_output_tokens"] == 20
    assert params["tools"][0]["name"] == "get_weather" and "function" not in params["tools"][0]
    assert params["input"][1] == {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"}
    assert params["input"][2] == {"type": "function_call_output", "call_id": "c1", "output": "sunny"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (_body(messages=[]), "messages"),
        (_body(messages=[{"role": "wizard", "content": "x"}]), "messages.0.role"),
        (_body(temperature=5), "temperature"),
        (_body(n=2), "n"),
        (_body(frequency_typo=1), "frequency_typo"),
        (_body(messages=[{"role": "user", "content": [{"type": "audio", "x": 1}]}]), "messages.0.content.0.type"),
        (_body(tools=[{"type": "function"}]), "tools.0"),
        (_body(response_format={"type": "json_schema"}), "response_format.json_schema"),
        (_body(gateway={"daemon": "nope"}), "gateway.daemon"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ],
)
def test_bad_requests_name_the_field(body, param):
    with pytest.raises(GatewayError) as info:
        openai_in.parse_chat(body, {})
    assert info.value.kind == "bad_request"
    assert info.value.param == param, info.value.message
    assert info.value.status_code == 400


def test_embeddings_parsing():
    request, encoding = openai_in.parse_embeddings({"model": "e", "input": "hello", "dimensions": 8}, {})
    assert request.texts == ("hello",) and request.dimensions == 8 and encoding == "float"
    for body, param in (
        ({"model": "e", "input": []}, "input"),
        ({"model": "e", "input": [[1, 2]]}, "input"),
        ({"model": "e", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ):
        with pytest.raises(GatewayError) as info:
            openai_in.parse_embeddings(body, {})
        assert info.value.param == param


def _sse_payloads(raw: bytes):
    return [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]


def test_chunk_encoder_emits_openai_chunk_sequence_with_usage_and_done():
    enc = openai_out.ChunkEncoder(created=1, include_usage=True)
    out = b"".join(
        enc.encode(e)
        for e in [
            StartEvent(id="chatcmpl-1", provider="openai", model="gpt-4o-mini", upstream_model="u"),
            TextDelta(text="Hel"),
            ToolCallDelta(index=0, id="call_1", name="f", arguments=""),
            ToolCallDelta(index=0, arguments="{}"),
            FinishEvent(finish_reason="tool_calls", usage=Usage(input_tokens=3, output_tokens=4)),
        ]
    )
    payloads = _sse_payloads(out)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["id"] == "chatcmpl-1" and c["model"] == "gpt-4o-mini" for c in chunks)
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hel"} and chunks[1]["usage"] is None
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"arguments": "", "name": "f"},
    }
    assert chunks[4]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[5]["choices"] == [] and chunks[5]["usage"]["total_tokens"] == 7


def test_mid_stream_error_never_looks_like_a_finish():
    enc = openai_out.ChunkEncoder(created=1, include_usage=True)
    out = enc.encode(ErrorEvent(error=GatewayError("truncated_stream", "cut").to_info()))
    payloads = _sse_payloads(out)
    assert "[DONE]" not in payloads
    assert json.loads(payloads[0])["error"]["type"] == "truncated_stream"


def test_completion_and_base64_embeddings_encoding():
    body = openai_out.chat_completion(
        ChatResponse(
            id="x",
            text=None,
            tool_calls=[ToolCall(id="c", name="f", arguments="{}")],
            finish_reason="tool_calls",
            usage=Usage(input_tokens=5, output_tokens=2, cached_input_tokens=1),
            provider="openai",
            model="m",
            upstream_model="u",
        )
    )
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "f"
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 1
    emb = openai_out.embeddings(
        EmbeddingsResponse(
            vectors=[[0.5, -1.0]],
            dimensions=2,
            model="e",
            upstream_model="e",
            provider="openai",
            usage=Usage(input_tokens=1),
        ),
        "base64",
    )
    assert struct.unpack("<2f", base64.b64decode(emb["data"][0]["embedding"])) == (0.5, -1.0)


def _with(body_extra: dict, headers: dict | None = None):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **body_extra}
    return openai_in.parse_chat(body, headers or {})[0]


def test_the_callers_safety_identifier_reaches_openai_on_both_apis():
    request = _with({"safety_identifier": "user-7f3a"})
    assert chat_params(request, _target(), stream=False)["safety_identifier"] == "user-7f3a"
    assert responses_params(request, _target("responses"), stream=False)["safety_identifier"] == "user-7f3a"


def test_without_one_it_is_a_hash_of_the_end_user_stable_and_not_their_name():
    def ident(org: str | None, user: str | None) -> str | None:
        headers = {k: v for k, v in (("x-gateway-org", org), ("x-gateway-user", user)) if v is not None}
        return chat_params(_with({}, headers), _target(), stream=False).get("safety_identifier")

    alice = ident("acme", "alice")
    assert alice is not None and len(alice) == 32 and "alice" not in alice
    assert ident("acme", "alice") == alice  # stable
    assert len({alice, ident("acme", "bob"), ident("beta", "alice")}) == 3  # per user, and per org
    assert ident(None, None) is None  # nobody to name: not sent


def test_a_safety_identifier_longer_than_openai_takes_is_a_400_naming_it():
    with pytest.raises(GatewayError) as info:
        _with({"safety_identifier": "x" * 65})
    assert info.value.status_code == 400 and "safety_identifier" in info.value.message
