"""Gemini generateContent / streamGenerateContent on the emulator: usage, wire format, tools, JSON, cache."""

from __future__ import annotations

import base64
import json
import uuid

import httpx
import pytest
from google import genai
from google.genai import errors, types

from gateway.emulators.text import answer_text
from tests.emulators.gemini.support import (
    FLASH,
    KEY,
    PNG,
    THINKING,
    TIME,
    WEATHER,
    cfg,
    rid,
    sse_events,
)
from tests.emulators.wire_data import Billing

# ---------------------------------------------------------------- generateContent / stream


def test_generate_text_usage_and_billing(gclient: genai.Client, billing_for: Billing) -> None:
    r = gclient.models.generate_content(model=FLASH, contents="hi there", config=cfg(system_instruction="be brief"))
    assert r.text == answer_text(FLASH, "hi there", 24)  # the OpenAI emulator's answer for the same message
    assert r.text.startswith(f"Hello from {FLASH}. You said: hi there")
    cand = r.candidates[0]
    assert cand.finish_reason == types.FinishReason.STOP and cand.content.role == "model"
    u = r.usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count, u.total_token_count) == (4, 24, 28)
    assert u.thoughts_token_count is None and u.cached_content_token_count is None
    assert u.prompt_tokens_details[0].modality == types.MediaModality.TEXT
    assert r.model_version == FLASH and r.sdk_http_response.headers["x-request-id"] == rid(r)
    bill = billing_for(rid(r))
    assert (bill.provider, bill.model, bill.endpoint, bill.stream, bill.outcome) == (
        "gemini",
        FLASH,
        "generateContent",
        False,
        "ok",
    )
    assert (bill.input_tokens, bill.output_tokens) == (4, 24)


def test_stream_reassembles_to_the_non_stream_answer(gclient: genai.Client, billing_for: Billing) -> None:
    plain = gclient.models.generate_content(model=FLASH, contents="tell me a story please")
    chunks = list(gclient.models.generate_content_stream(model=FLASH, contents="tell me a story please"))
    assert len(chunks) == 7  # 24 tokens, four to a chunk, then the finish chunk
    assert "".join(c.text or "" for c in chunks) == plain.text
    finishes = [c.candidates[0].finish_reason for c in chunks]
    assert finishes[-1] == types.FinishReason.STOP and not any(finishes[:-1])
    assert chunks[-1].usage_metadata == plain.usage_metadata
    assert [c.usage_metadata.candidates_token_count for c in chunks[:3]] == [4, 8, 12]
    bill = billing_for(rid(chunks[0]))
    assert (bill.input_tokens, bill.output_tokens, bill.stream, bill.endpoint) == (
        5,
        24,
        True,
        "streamGenerateContent",
    )


def test_stream_wire_format_auth_and_json_array(gurl: str, http: httpx.Client) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    url = f"{gurl}/{FLASH}:streamGenerateContent"
    with http.stream("POST", url + "?alt=sse&key=k", json=body) as r:  # the `key` query parameter also works
        assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.read().decode())
    assert ["finishReason" in e["candidates"][0] for e in events] == [False] * 6 + [True]
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] == 24
    array = http.post(url, json=body, headers=KEY)  # without alt=sse: one JSON array
    assert array.headers["content-type"].startswith("application/json")
    strip = [{k: v for k, v in e.items() if k != "responseId"} for e in events]
    assert [{k: v for k, v in e.items() if k != "responseId"} for e in json.loads(array.text)] == strip
    no_key = http.post(f"{gurl}/{FLASH}:generateContent", json=body)
    assert no_key.status_code == 403 and no_key.json()["error"]["status"] == "PERMISSION_DENIED"
    v1 = http.post(f"{gurl.replace('/v1beta/', '/v1/')}/{FLASH}:generateContent", json=body, headers=KEY)
    assert v1.status_code == 200 and v1.json()["candidates"][0]["content"]["parts"][0]["text"].startswith("Hello")


def test_function_call_round_trip_requires_the_thought_signature(
    gclient: genai.Client, gurl: str, http: httpx.Client, billing_for: Billing
) -> None:
    config = cfg(tools=[types.Tool(function_declarations=[WEATHER, TIME])])
    question = types.Content(role="user", parts=[types.Part(text="what is the weather in Paris?")])
    r = gclient.models.generate_content(model=THINKING, contents=[question], config=config)
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    (call,) = r.function_calls
    assert call.name == "get_weather" and set(call.args) == {"city", "days", "unit"} and call.args["unit"] == "c"
    assert isinstance(call.args["days"], int)
    (part,) = r.candidates[0].content.parts
    assert part.thought_signature and part.thought_signature.startswith(b"emu-thought-sig:")
    u = r.usage_metadata
    assert u.thoughts_token_count == 16 and u.candidates_token_count > 0
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count + 16
    bill = billing_for(rid(r))
    assert (bill.input_tokens, bill.output_tokens, bill.reasoning_tokens) == (
        u.prompt_token_count,
        u.candidates_token_count + 16,
        16,
    )
    answer = types.Part.from_function_response(name="get_weather", response={"result": "sunny and 21C"})
    history = [question, r.candidates[0].content, types.Content(role="user", parts=[answer])]
    r2 = gclient.models.generate_content(model=THINKING, contents=history, config=config)
    assert "The tools returned: sunny and 21C" in r2.text and r2.function_calls is None
    # on the wire: the same history without (or with a wrong) thoughtSignature is rejected
    wire = json.loads(json.dumps(history[1].model_dump(mode="json", exclude_none=True)))
    sent_part = {"functionCall": wire["parts"][0]["function_call"]}
    result = {"functionResponse": {"name": "get_weather", "response": {}}}
    turns = [("user", {"text": "weather?"}), ("model", sent_part), ("user", result)]
    raw = {"contents": [{"role": role, "parts": [p]} for role, p in turns]}
    missing = http.post(f"{gurl}/{THINKING}:generateContent", json=raw, headers=KEY)
    assert missing.status_code == 400 and missing.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "thought_signature" in missing.json()["error"]["message"]
    sent_part["thoughtSignature"] = base64.b64encode(b"emu-thought-sig:forged-forged-forged-forg").decode()
    assert http.post(f"{gurl}/{THINKING}:generateContent", json=raw, headers=KEY).status_code == 400
    sent_part["thoughtSignature"] = base64.b64encode(part.thought_signature).decode()  # standard alphabet is fine
    assert http.post(f"{gurl}/{THINKING}:generateContent", json=raw, headers=KEY).status_code == 200
    with pytest.raises(errors.ClientError) as err:
        gclient.models.generate_content(
            model=THINKING,
            contents=[
                question,
                types.Content(role="model", parts=[types.Part(function_call=call)]),
                types.Content(role="user", parts=[answer]),
            ],
            config=config,
        )
    assert err.value.code == 400 and "thought_signature" in err.value.message
    plain = gclient.models.generate_content(model=FLASH, contents=[question], config=config)
    assert plain.candidates[0].content.parts[0].thought_signature is None
    assert plain.usage_metadata.thoughts_token_count is None


def test_parallel_named_and_none_tool_calls(gclient: genai.Client) -> None:
    tools = [types.Tool(function_declarations=[WEATHER, TIME])]
    chunks = list(
        gclient.models.generate_content_stream(model=THINKING, contents="do these in parallel", config=cfg(tools=tools))
    )
    calls = [fc for c in chunks for fc in (c.function_calls or [])]
    assert [fc.name for fc in calls] == ["get_weather", "get_time"] and calls[1].args == {}
    signed = [p for c in chunks for p in (c.candidates[0].content.parts or []) if p.function_call]
    assert all(p.thought_signature for p in signed) and len(signed) == 2
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count == sum(1 + len(json.dumps(fc.args).split()) for fc in calls)
    named = gclient.models.generate_content(
        model=FLASH,
        contents="do these in parallel",
        config=cfg(
            tools=tools,
            tool_config=types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(mode="ANY", allowed_function_names=["get_time"])
            ),
        ),
    )
    assert [fc.name for fc in named.function_calls] == ["get_time"]
    none = gclient.models.generate_content(
        model=FLASH,
        contents="hi",
        config=cfg(
            tools=tools, tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="NONE"))
        ),
    )
    assert none.function_calls is None and none.text.startswith("Hello")


def test_inline_image_counts_and_count_tokens_agree(gclient: genai.Client, gurl: str, http: httpx.Client) -> None:
    contents = [types.Part.from_bytes(data=PNG, mime_type="image/png"), "what is this picture"]
    r = gclient.models.generate_content(model=FLASH, contents=contents)
    u = r.usage_metadata
    assert u.prompt_token_count == 4 + 85
    assert {(d.modality.value, d.token_count) for d in u.prompt_tokens_details} == {("TEXT", 4), ("IMAGE", 85)}
    assert gclient.models.count_tokens(model=FLASH, contents=contents).total_tokens == u.prompt_token_count
    image = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}}  # camelCase spelling
    body = {"contents": [{"role": "user", "parts": [image, {"text": "what is this picture"}]}]}
    raw = http.post(f"{gurl}/{FLASH}:generateContent", json=body, headers=KEY).json()
    assert raw["usageMetadata"]["promptTokenCount"] == 89
    count = http.post(f"{gurl}/{FLASH}:countTokens", json=body, headers=KEY).json()
    assert count["totalTokens"] == 89
    body["contents"][0]["parts"][0] = {"inlineData": {"data": "AAAA"}}
    bad = http.post(f"{gurl}/{FLASH}:generateContent", json=body, headers=KEY)
    assert bad.status_code == 400 and "mime_type" in bad.json()["error"]["message"]


def test_json_mode_max_tokens_and_stop_sequences(gclient: genai.Client) -> None:
    plain_json = gclient.models.generate_content(
        model=FLASH, contents="hi", config=cfg(response_mime_type="application/json")
    )
    assert set(json.loads(plain_json.text)) == {"model", "answer"}
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["n", "tags"],
        "additionalProperties": False,
    }
    with_schema = gclient.models.generate_content(
        model=FLASH, contents="hi", config=cfg(response_mime_type="application/json", response_json_schema=schema)
    )
    assert json.loads(with_schema.text) == {"n": 1, "tags": ["example"]}
    typed = gclient.models.generate_content(
        model=FLASH,
        contents="hi",
        config=cfg(
            response_mime_type="application/json",
            response_schema=types.Schema(type="OBJECT", properties={"ok": types.Schema(type="BOOLEAN")}),
        ),
    )
    assert json.loads(typed.text) == {"ok": True}
    short = gclient.models.generate_content(model=FLASH, contents="hi", config=cfg(max_output_tokens=5))
    assert short.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert len(short.text.split()) == 5 == short.usage_metadata.candidates_token_count
    thinking = gclient.models.generate_content(model=THINKING, contents="hi", config=cfg(max_output_tokens=20))
    assert thinking.usage_metadata.thoughts_token_count == 16 and len(thinking.text.split()) == 4
    no_think = gclient.models.generate_content(
        model=THINKING, contents="hi", config=cfg(thinking_config=types.ThinkingConfig(thinking_budget=0))
    )
    assert no_think.usage_metadata.thoughts_token_count is None
    stopped = gclient.models.generate_content(model=FLASH, contents="hi", config=cfg(stop_sequences=["You said"]))
    assert stopped.text == f"Hello from {FLASH}." and stopped.candidates[0].finish_reason == types.FinishReason.STOP
    with pytest.raises(errors.ClientError) as err:
        gclient.models.generate_content(model=FLASH, contents="hi", config=cfg(temperature=3.5))
    assert err.value.code == 400 and "temperature" in err.value.message


def test_implicit_cache_for_a_long_system_instruction(gclient: genai.Client, billing_for: Billing) -> None:
    system = " ".join(["rule"] * 150) + " " + uuid.uuid4().hex
    first = gclient.models.generate_content(model=FLASH, contents="hi", config=cfg(system_instruction=system))
    second = gclient.models.generate_content(model=FLASH, contents="hi", config=cfg(system_instruction=system))
    assert first.usage_metadata.cached_content_token_count is None
    assert second.usage_metadata.cached_content_token_count == 151
    assert second.usage_metadata.prompt_token_count == 152
    bill = billing_for(rid(second))
    assert (bill.input_tokens, bill.cached_input_tokens) == (152, 151)
