"""The Gemini emulator driven by the official `google-genai` SDK, and by raw httpx where the SDK hides the wire."""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import httpx2
import pytest
from google import genai
from google.genai import errors, types

from gateway.emulators import Emulator, EmulatorSettings
from gateway.emulators.text import answer_text
from tests.emulators.wire_data import Billing

FLASH = "gemini-2.0-flash"  # no thinking, no signatures
THINKING = "gemini-2.5-flash"  # thinks (thoughtsTokenCount) and signs its function calls
EMBED = "gemini-embedding-001"
KEY = {"x-goog-api-key": "k"}
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="w",
    parameters_json_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "days", "unit"],
    },
)
TIME = types.FunctionDeclaration(name="get_time", parameters=types.Schema(type="OBJECT", properties={}))
NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _client(url: str, timeout_ms: int = 10_000) -> genai.Client:
    options = types.HttpOptions(base_url=url + "/gemini/", api_version="v1beta", timeout=timeout_ms)
    return genai.Client(api_key="k", http_options=options)


@pytest.fixture(scope="module")
def gurl(emulator: Emulator) -> str:
    assert emulator.base_url
    return emulator.base_url + "/gemini/v1beta/models"


@pytest.fixture(scope="module")
def gclient(emulator: Emulator) -> Iterator[genai.Client]:
    assert emulator.base_url
    c = _client(emulator.base_url)  # keep the reference: a temporary Client closes its transport
    yield c
    c.close()


@pytest.fixture(scope="module")
def quick(emulator: Emulator) -> Iterator[genai.Client]:
    assert emulator.base_url
    c = _client(emulator.base_url, timeout_ms=500)
    yield c
    c.close()


def cfg(**kwargs: Any) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(automatic_function_calling=NO_AFC, **kwargs)


def rid(response: types.GenerateContentResponse) -> str:
    assert response.response_id
    return response.response_id


def sse_events(text: str) -> list[dict[str, Any]]:
    assert text.endswith("\r\n\r\n") and "[DONE]" not in text
    blocks = [b for b in text.split("\r\n\r\n") if b]
    assert all(b.startswith("data: ") for b in blocks)
    return [json.loads(b[6:]) for b in blocks]


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
    assert len(chunks) == 25
    assert "".join(c.text or "" for c in chunks) == plain.text
    finishes = [c.candidates[0].finish_reason for c in chunks]
    assert finishes[-1] == types.FinishReason.STOP and not any(finishes[:-1])
    assert chunks[-1].usage_metadata == plain.usage_metadata
    assert [c.usage_metadata.candidates_token_count for c in chunks[:3]] == [1, 2, 3]
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
    assert ["finishReason" in e["candidates"][0] for e in events] == [False] * 24 + [True]
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


# ---------------------------------------------------------------- embeddings, schemas, validation


def test_embeddings_dimensions_task_type_and_determinism(gclient: genai.Client, gurl: str, http: httpx.Client) -> None:
    def embed(texts: list[str], **config: Any) -> list[list[float]]:
        r = gclient.models.embed_content(model=EMBED, contents=texts, config=types.EmbedContentConfig(**config))
        return [e.values for e in r.embeddings]

    four = embed(["alpha beta", "gamma"], output_dimensionality=4, task_type="RETRIEVAL_DOCUMENT")
    assert [len(v) for v in four] == [4, 4] and four[0] != four[1]
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0) for v in four)
    assert embed(["alpha beta"], output_dimensionality=4, task_type="RETRIEVAL_DOCUMENT")[0] == four[0]
    assert embed(["alpha beta"], output_dimensionality=4, task_type="RETRIEVAL_QUERY")[0] != four[0]
    (full,) = embed(["alpha beta"], task_type="RETRIEVAL_DOCUMENT")
    assert len(full) == 3072  # and the 4-d vector is its re-normalised head
    norm = math.sqrt(math.fsum(x * x for x in full[:4]))
    assert all(math.isclose(a, b / norm) for a, b in zip(four[0], full[:4], strict=True))
    one = http.post(
        f"{gurl}/{EMBED}:embedContent",
        headers=KEY,
        json={
            "content": {"parts": [{"text": "alpha beta"}]},
            "taskType": "RETRIEVAL_DOCUMENT",
            "outputDimensionality": 4,
        },
    )
    assert one.json() == {"embedding": {"values": four[0]}}
    bad = http.post(
        f"{gurl}/{EMBED}:batchEmbedContents",
        headers=KEY,
        json={"requests": [{"content": {"parts": [{"text": "a"}]}, "taskType": "NOPE"}]},
    )
    assert bad.status_code == 400 and "task_type" in bad.json()["error"]["message"]


@pytest.mark.parametrize(
    "key", ["additionalProperties", "$schema", "exclusiveMinimum", "exclusiveMaximum", "$ref", "$defs"]
)
def test_schema_keys_rejected_in_parameters_only(key: str, gurl: str, http: httpx.Client) -> None:
    inner: dict[str, Any] = {"type": "integer", key: 0 if key.startswith("exclusive") else "x"}
    if key == "additionalProperties":
        inner = {"type": "object", key: False}
    elif key == "$defs":
        inner = {"type": "object", key: {"a": {"type": "string"}}}
    schema = {"type": "object", "properties": {"x": inner}}
    decl: dict[str, Any] = {"name": "f", "parameters": schema}
    body = {"contents": [{"parts": [{"text": "hi"}]}], "tools": [{"functionDeclarations": [decl]}]}
    r = http.post(f"{gurl}/{FLASH}:generateContent", json=body, headers=KEY)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and f'Unknown name "{key}"' in error["message"]
    assert "tools[0].function_declarations[0].parameters.properties[x]" in error["message"]
    decl["parametersJsonSchema"] = decl.pop("parameters")
    assert http.post(f"{gurl}/{FLASH}:generateContent", json=body, headers=KEY).status_code == 200


def test_sdk_schema_rejected_and_request_validation(gclient: genai.Client, gurl: str, http: httpx.Client) -> None:
    # types.Schema(additional_properties=...) goes out snake_case; refused all the same
    decl = types.FunctionDeclaration(name="f", parameters=types.Schema(type="OBJECT", additional_properties=False))
    with pytest.raises(errors.ClientError) as err:
        gclient.models.generate_content(
            model=FLASH, contents="hi", config=cfg(tools=[types.Tool(function_declarations=[decl])])
        )
    assert (err.value.code, err.value.status) == (400, "INVALID_ARGUMENT")
    assert 'Unknown name "additional_properties"' in err.value.message
    decl = types.FunctionDeclaration(
        name="f", parameters=types.Schema(type="OBJECT", properties={"n": types.Schema(type="INTEGER")}, required=["n"])
    )
    ok = gclient.models.generate_content(
        model=FLASH, contents="hi", config=cfg(tools=[types.Tool(function_declarations=[decl])])
    )
    assert ok.function_calls[0].args == {"n": 1}  # OpenAPI-style upper-case types understood
    assert http.post(f"{gurl}/{FLASH}:generateContent", json={}, headers=KEY).status_code == 400
    assert http.post(f"{gurl}/{FLASH}:generateContent", content=b"{nope", headers=KEY).status_code == 400
    r = http.post(f"{gurl}/{FLASH}-fault-bogus:generateContent", json={"contents": "x"}, headers=KEY)
    assert r.status_code == 400 and "bogus" in r.json()["error"]["message"]
    r = http.post(f"{gurl}/{FLASH}:fooBar", json={}, headers=KEY)
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"
    listed = [m.name for m in gclient.models.list()]
    assert "models/gemini-2.5-flash" in listed


# ---------------------------------------------------------------- faults


def test_error_faults_map_to_sdk_exceptions(gclient: genai.Client, billed: Callable[[str], bool]) -> None:
    def fail(fault: str, exc: type[errors.APIError] = errors.ClientError) -> errors.APIError:
        with pytest.raises(exc) as info:
            gclient.models.generate_content(model=f"{FLASH}-fault-{fault}", contents="hi")
        assert not billed(info.value.response.headers["x-request-id"])
        return info.value

    rate = fail("429")
    assert (rate.code, rate.status) == (429, "RESOURCE_EXHAUSTED") and "quota" not in rate.message
    retry = [d for d in rate.details["error"]["details"] if d["@type"].endswith("RetryInfo")]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]
    bare = fail("429-no-retry-after")
    assert bare.code == 429 and not any(d["@type"].endswith("RetryInfo") for d in bare.details["error"]["details"])
    quota = fail("quota")
    assert (quota.code, quota.status) == (429, "RESOURCE_EXHAUSTED") and "quota" in quota.message
    auth = fail("401")
    assert (auth.code, auth.status) == (400, "INVALID_ARGUMENT")
    assert auth.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    for _ in range(2):
        busy = fail("503", errors.ServerError)
        assert (busy.code, busy.status) == (503, "UNAVAILABLE") and "The model is overloaded." in busy.message
    ctx = fail("context-length")
    assert ctx.status == "INVALID_ARGUMENT" and ctx.message == (
        "The input token count (128001) exceeds the maximum number of tokens allowed (128000)."
    )
    with pytest.raises(errors.ClientError):  # faults reach the other methods too
        gclient.models.embed_content(model=f"{EMBED}-fault-429", contents="x")


def test_500_once_then_identical_retry_succeeds(gclient: genai.Client) -> None:
    contents = f"once {uuid.uuid4().hex}"
    with pytest.raises(errors.ServerError) as err:
        gclient.models.generate_content(model=f"{FLASH}-fault-500-once", contents=contents)
    assert (err.value.code, err.value.status) == (500, "INTERNAL")
    ok = gclient.models.generate_content(model=f"{FLASH}-fault-500-once", contents=contents)
    assert ok.candidates[0].finish_reason == types.FinishReason.STOP


def test_safety_content_filter_and_prompt_block(gclient: genai.Client, billing_for: Billing) -> None:
    blocked = gclient.models.generate_content(model=f"{FLASH}-fault-content-filter", contents="hi")
    cand = blocked.candidates[0]
    assert cand.finish_reason == types.FinishReason.SAFETY and not cand.content.parts and blocked.text is None
    assert any(r.blocked for r in cand.safety_ratings)
    bill = billing_for(rid(blocked))
    assert (bill.outcome, bill.input_tokens, bill.output_tokens) == ("safety", 1, 0)
    config = types.GenerateContentConfig(http_options=types.HttpOptions(headers={"x-emulator-fault": "prompt-blocked"}))
    prompt = gclient.models.generate_content(model=FLASH, contents="hi", config=config)
    assert prompt.candidates is None and prompt.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    assert prompt.usage_metadata.prompt_token_count == 1 and billing_for(rid(prompt)).outcome == "prompt_blocked"
    (chunk,) = list(gclient.models.generate_content_stream(model=f"{FLASH}-fault-content-filter", contents="hi"))
    assert chunk.candidates[0].finish_reason == types.FinishReason.SAFETY
    (chunk,) = list(gclient.models.generate_content_stream(model=f"{FLASH}-fault-prompt-blocked", contents="hi"))
    assert chunk.candidates is None and chunk.prompt_feedback.block_reason == types.BlockedReason.SAFETY


def _request_id(emulator: Emulator, marker: str) -> str:
    (record,) = [r for r in list(emulator.recorder.requests) if marker in json.dumps(r.body)]
    return record.request_id


def test_transport_faults(quick: genai.Client, emulator: Emulator, billed: Callable[[str], bool]) -> None:
    for fault, exc in (("reset", httpx2.RemoteProtocolError), ("hang", httpx2.ReadTimeout)):
        marker = uuid.uuid4().hex
        t0 = time.monotonic()
        with pytest.raises(exc):
            quick.models.generate_content(model=f"{FLASH}-fault-{fault}", contents=marker)
        assert time.monotonic() - t0 < 3 and not billed(_request_id(emulator, marker))
    slow = types.GenerateContentConfig(http_options=types.HttpOptions(headers={"x-emulator-slow-ms": "200"}))
    t0 = time.monotonic()
    quick.models.generate_content(model=f"{FLASH}-fault-slow-first-token", contents="hi", config=slow)
    assert time.monotonic() - t0 >= 0.2


def test_cut_and_stall_streams_bill_what_was_sent(quick: genai.Client, billing_for: Billing) -> None:
    got: list[types.GenerateContentResponse] = []
    with pytest.raises(httpx2.RemoteProtocolError):
        got.extend(quick.models.generate_content_stream(model=f"{FLASH}-fault-cut", contents="hi"))
    bill = billing_for(rid(got[0]))
    assert bill.outcome == "cut" and bill.stream and bill.input_tokens == 1
    assert 0 < bill.output_tokens == len(got) == got[-1].usage_metadata.candidates_token_count < 24
    got = []
    with pytest.raises(httpx2.ReadTimeout):
        got.extend(quick.models.generate_content_stream(model=f"{THINKING}-fault-stall", contents="hi"))
    bill = billing_for(rid(got[0]))
    assert bill.outcome == "stall" and len(got) == 3 and bill.output_tokens == 3 + 16


def test_malformed_no_done_and_error_midstream(gclient: genai.Client, billing_for: Billing, emulator: Emulator) -> None:
    with pytest.raises(errors.UnknownApiResponseError):
        list(gclient.models.generate_content_stream(model=f"{FLASH}-fault-malformed", contents="hi"))
    chunks = list(gclient.models.generate_content_stream(model=f"{FLASH}-fault-no-done", contents="hi"))
    assert len(chunks) == 24 and all(c.candidates[0].finish_reason is None for c in chunks)
    assert billing_for(rid(chunks[0])).outcome == "no-done"
    got: list[types.GenerateContentResponse] = []
    with pytest.raises(errors.ServerError) as err:
        got.extend(gclient.models.generate_content_stream(model=f"{FLASH}-fault-error-midstream", contents="hi"))
    assert (err.value.code, err.value.status, len(got)) == (503, "UNAVAILABLE", 3)
    bill = billing_for(rid(got[0]))
    assert (bill.outcome, bill.output_tokens) == ("error-midstream", 3)
    with pytest.raises(errors.ServerError):  # nothing to break in a non-stream call: it fails as a whole
        gclient.models.generate_content(model=f"{FLASH}-fault-error-midstream", contents="hi")


def test_real_context_window_check() -> None:
    em = Emulator(EmulatorSettings(context_window=10))
    url = em.start_in_thread()
    c = _client(url)
    try:
        assert c.models.generate_content(model=FLASH, contents="one two three").usage_metadata.prompt_token_count == 3
        with pytest.raises(errors.ClientError) as err:
            c.models.generate_content(model=FLASH, contents=" ".join(["w"] * 11))
        assert err.value.message == "The input token count (11) exceeds the maximum number of tokens allowed (10)."
        assert [b.outcome for b in em.recorder.billing] == ["ok"]
    finally:
        c.close()
        em.stop_thread()
