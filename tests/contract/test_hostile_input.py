"""Hostile but well-formed caller input, through every adapter against its emulator: the answer is a success or a
client error (4xx kind) naming what was wrong, never a 5xx kind or a raw exception. Deterministic: a seeded
generator over the normalized schema's fields, and the edge wires' parsers for what the schema cannot hold."""

from __future__ import annotations

import json
import random

import pytest
from pydantic import ValidationError

from gateway.schema import ChatRequest, GatewayError
from gateway.schema.errors import SEMANTICS
from gateway.wire import anthropic_in, openai_in
from tests.contract.cases import CASES, Case

ODD_TEXT = ("", " ", "\u200b", "\x00", "🙂" * 3, "a" * 2000, '{"json": "in text"}', "</s>", "\\u0000", "\r\n\r\n")
ODD_JSON = ('{"a": null}', '{"nested": {"deep": [1, {"x": []}]}}', '{"": ""}', '{"n": 1e308}', "{}", "")
ODD_SCHEMAS = ({"type": "object"}, {"type": "object", "properties": {"x": {"type": "array", "items": {}}}},
               {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}},
               {"type": "object", "additionalProperties": False, "required": []})  # fmt: skip
SAMPLES = 12


def _message(rng: random.Random, i: int) -> list[dict]:
    """A user turn, sometimes followed by an assistant tool call and its result."""
    turn = [{"role": "user", "content": rng.choice(ODD_TEXT) or "hi"}]
    if rng.random() < 0.5:
        call = {"id": f"call_{i}", "name": "tool_a", "arguments": rng.choice(ODD_JSON)}
        turn += [{"role": "assistant", "content": rng.choice((None, "", "thinking...")), "tool_calls": [call]},
                 {"role": "tool", "tool_call_id": f"call_{i}", "content": rng.choice(ODD_TEXT)}]  # fmt: skip
    return turn


def _request(rng: random.Random) -> ChatRequest:
    messages = [m for i in range(rng.randint(1, 3)) for m in _message(rng, i)]
    if rng.random() < 0.3:
        messages.insert(0, {"role": "system", "content": rng.choice(ODD_TEXT) or "be brief"})
    body: dict = {"model": "m", "messages": messages, "max_tokens": rng.choice((None, 1, 16))}
    body["tools"] = [{"name": "tool_a", "parameters": rng.choice(ODD_SCHEMAS)}]
    body["tool_choice"] = rng.choice((None, "auto", "none", {"type": "tool", "name": "tool_a"}))
    body["temperature"] = rng.choice((None, 0.0, 2.0))
    body["top_p"] = rng.choice((None, 1.0, 0.01))
    if rng.random() < 0.3:
        body["response_format"] = rng.choice(
            ({"type": "json_object"}, {"type": "json_schema", "json_schema": rng.choice(ODD_SCHEMAS)})
        )
    if rng.random() < 0.3:
        body["stop"] = [rng.choice(ODD_TEXT[1:]) or "x"]
    return ChatRequest.model_validate(body)


def _client_error(exc: GatewayError) -> bool:
    return SEMANTICS[exc.kind].status < 500


@pytest.fixture(params=CASES, ids=lambda c: c.id)
async def adapter(request, emulator_url: str):
    case: Case = request.param
    provider = case.provider(emulator_url, read_timeout=5.0)
    yield case, provider
    await provider.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_hostile_requests_get_an_answer_or_a_client_error_from_every_adapter(adapter, stream):
    case, provider = adapter
    rng = random.Random(f"{case.id}-{stream}")
    for n in range(SAMPLES):
        request = _request(rng)
        if provider.unsupported(request, case.target()) is not None:
            continue  # planning sends it elsewhere
        try:
            if stream:
                _ = [e async for e in provider.stream(request, case.target())]
            else:
                await provider.complete(request, case.target())
        except GatewayError as exc:
            assert _client_error(exc), f"sample {n}: {exc.kind.value}: {exc.message}\n{request.model_dump_json()}"


BAD_ARGUMENTS = ("{not json", "[1, 2]", '"a string"', "42", "null")


@pytest.mark.parametrize("arguments", BAD_ARGUMENTS)
def test_malformed_tool_call_arguments_are_a_400_naming_the_openai_field(arguments):
    body = {"model": "m", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}  # fmt: skip
    with pytest.raises(GatewayError) as info:
        openai_in.parse_chat(body, {})
    assert info.value.status_code == 400 and info.value.param == "messages.1.tool_calls.0.function.arguments"


@pytest.mark.parametrize("tool_input", ["a string", [1, 2], 3, None])
def test_an_anthropic_tool_use_whose_input_is_not_an_object_is_a_400_naming_the_field(tool_input):
    body = {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": tool_input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}]}  # fmt: skip
    with pytest.raises(GatewayError) as info:
        anthropic_in.parse_messages(body, {})
    assert info.value.status_code == 400 and info.value.param == "messages.1.content.0.input"


@pytest.mark.parametrize("arguments", BAD_ARGUMENTS)
def test_a_normalized_request_with_malformed_arguments_is_refused_by_the_schema(arguments):
    with pytest.raises(ValidationError) as info:
        ChatRequest.model_validate({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "c", "name": "f", "arguments": arguments}]}]})  # fmt: skip
    assert [str(x) for x in info.value.errors()[0]["loc"]] == ["messages", "1", "tool_calls", "0", "arguments"]


def test_valid_arguments_pass_through_unchanged():
    request = ChatRequest.model_validate({"model": "m", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "c", "name": "f", "arguments": '{"x": [1]}'}]}]})  # fmt: skip
    assert json.loads(request.messages[1].tool_calls[0].arguments) == {"x": [1]}
