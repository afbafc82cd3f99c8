"""Gemini embeddings, schema and request validation, and the fault catalogue on the emulator."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import pytest
from google import genai
from google.genai import errors, types

from gateway.emulators import Emulator, EmulatorSettings
from tests.emulators.gemini.support import (
    EMBED,
    FLASH,
    KEY,
    THINKING,
    _client,
    cfg,
    rid,
)
from tests.emulators.wire_data import Billing

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
    assert 0 < bill.output_tokens == 4 * len(got) == got[-1].usage_metadata.candidates_token_count < 24  # 4 a chunk
    got = []
    with pytest.raises(httpx2.ReadTimeout):
        got.extend(quick.models.generate_content_stream(model=f"{THINKING}-fault-stall", contents="hi"))
    bill = billing_for(rid(got[0]))
    assert bill.outcome == "stall" and len(got) == 3 and bill.output_tokens == 3 * 4 + 16


def test_malformed_no_done_and_error_midstream(gclient: genai.Client, billing_for: Billing, emulator: Emulator) -> None:
    with pytest.raises(errors.UnknownApiResponseError):
        list(gclient.models.generate_content_stream(model=f"{FLASH}-fault-malformed", contents="hi"))
    chunks = list(gclient.models.generate_content_stream(model=f"{FLASH}-fault-no-done", contents="hi"))
    assert len(chunks) == 6 and all(c.candidates[0].finish_reason is None for c in chunks)
    assert billing_for(rid(chunks[0])).outcome == "no-done"
    got: list[types.GenerateContentResponse] = []
    with pytest.raises(errors.ServerError) as err:
        got.extend(gclient.models.generate_content_stream(model=f"{FLASH}-fault-error-midstream", contents="hi"))
    assert (err.value.code, err.value.status, len(got)) == (503, "UNAVAILABLE", 3)
    bill = billing_for(rid(got[0]))
    assert (bill.outcome, bill.output_tokens) == ("error-midstream", 12)
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
