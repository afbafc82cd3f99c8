"""The OpenAI emulator's fault catalogue, seen through the official `openai` SDK and raw httpx."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from gateway.emulators import Emulator, EmulatorSettings
from tests.emulators.wire_data import AUTH, MODEL, Billing, user

# ---------------------------------------------------------------- faults


def test_error_faults_map_to_sdk_exceptions(client: openai.OpenAI, billed: Callable[[str], bool]) -> None:
    with pytest.raises(openai.RateLimitError) as rl:
        client.chat.completions.create(model=f"{MODEL}-fault-429", messages=user("hi"))
    assert rl.value.response.headers["retry-after"] == "1" and rl.value.response.headers["retry-after-ms"] == "1000"
    assert rl.value.code == "rate_limit_exceeded" and not billed(rl.value.response.headers["x-request-id"])
    with pytest.raises(openai.RateLimitError) as rl:
        client.chat.completions.create(model=f"{MODEL}-fault-429-no-retry-after", messages=user("hi"))
    assert "retry-after" not in rl.value.response.headers
    with pytest.raises(openai.RateLimitError) as quota:
        client.chat.completions.create(model=MODEL, messages=user("hi"), extra_headers={"x-emulator-fault": "quota"})
    assert quota.value.code == "insufficient_quota" and quota.value.type == "insufficient_quota"
    with pytest.raises(openai.AuthenticationError) as auth:
        client.embeddings.create(model="text-embedding-3-small-fault-401", input="x")
    assert auth.value.code == "invalid_api_key"
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as busy:
            client.responses.create(model="gpt-4.1-fault-503", input="hi")
        assert busy.value.status_code == 503
    with pytest.raises(openai.BadRequestError) as ctx:
        client.chat.completions.create(model=f"{MODEL}-fault-context-length", messages=user("hi"))
    assert ctx.value.code == "context_length_exceeded" and ctx.value.param == "messages"
    assert ctx.value.body == {
        "message": ctx.value.body["message"],
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }


def test_500_once_then_identical_retry_succeeds(client: openai.OpenAI) -> None:
    messages = user(f"once {uuid.uuid4().hex}")
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model=f"{MODEL}-fault-500-once", messages=messages)
    assert err.value.status_code == 500
    ok = client.chat.completions.create(model=f"{MODEL}-fault-500-once", messages=messages)
    assert ok.choices[0].finish_reason == "stop"
    key = {"x-emulator-key": uuid.uuid4().hex}
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=f"{MODEL}-fault-500-once", messages=user("a"), extra_headers=key)
    client.chat.completions.create(model=f"{MODEL}-fault-500-once", messages=user("b"), extra_headers=key)


def test_real_context_window_check() -> None:
    em = Emulator(EmulatorSettings(context_window=10))
    url = em.start_in_thread()
    try:
        c = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="sk-test", max_retries=0)
        assert c.chat.completions.create(model=MODEL, messages=user("one two three")).usage.prompt_tokens == 3
        with pytest.raises(openai.BadRequestError) as err:
            c.chat.completions.create(model=MODEL, messages=user(" ".join(["w"] * 11)))
        assert err.value.code == "context_length_exceeded" and "11 tokens" in err.value.message
        assert [b.outcome for b in em.recorder.billing] == ["ok"]
    finally:
        em.stop_thread()


def _marked(emulator: Emulator, marker: str) -> str:
    (record,) = [r for r in list(emulator.recorder.requests) if marker in json.dumps(r.body)]
    return record.request_id


def test_transport_faults(client: openai.OpenAI, emulator: Emulator, billed: Callable[[str], bool]) -> None:
    marker = uuid.uuid4().hex
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=f"{MODEL}-fault-reset", messages=user(marker))
    assert not billed(_marked(emulator, marker))
    quick = client.with_options(timeout=httpx.Timeout(5.0, read=0.5))
    marker = uuid.uuid4().hex
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        quick.chat.completions.create(model=f"{MODEL}-fault-hang", messages=user(marker))
    assert time.monotonic() - t0 < 3 and not billed(_marked(emulator, marker))
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=f"{MODEL}-fault-cut", messages=user("hi"))


def test_cut_stream_raises_mid_stream_and_bills_what_was_sent(client: openai.OpenAI, billing_for: Billing) -> None:
    raw = client.chat.completions.with_raw_response.create(model=f"{MODEL}-fault-cut", messages=user("hi"), stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in raw.parse():
            received.append(chunk.choices[0].delta.content or "")
    bill = billing_for(raw.headers["x-request-id"])
    assert bill.outcome == "cut" and bill.stream and bill.input_tokens == 1
    assert 0 < bill.output_tokens == sum(1 for text in received if text) < 24


def test_stall_malformed_and_no_done_streams(
    client: openai.OpenAI, base_url: str, billing_for: Billing, http: httpx.Client
) -> None:
    quick = client.with_options(timeout=httpx.Timeout(5.0, read=0.5))
    raw = quick.chat.completions.with_raw_response.create(
        model=f"{MODEL}-fault-stall", messages=user("hi"), stream=True
    )
    got: list[Any] = []
    with pytest.raises(openai.APITimeoutError):
        got.extend(raw.parse())
    bill = billing_for(raw.headers["x-request-id"])
    assert bill.outcome == "stall" and bill.output_tokens == 3 == sum(1 for c in got if c.choices[0].delta.content)
    with pytest.raises(json.JSONDecodeError):
        list(client.chat.completions.create(model=f"{MODEL}-fault-malformed", messages=user("hi"), stream=True))
    chunks = list(
        client.chat.completions.create(
            model=f"{MODEL}-fault-no-done", messages=user("hi"), stream=True, stream_options={"include_usage": True}
        )
    )
    assert len(chunks) == 25 and all(c.usage is None and c.choices[0].finish_reason is None for c in chunks)
    body = {"model": f"{MODEL}-fault-no-done", "messages": user("hi"), "stream": True}
    text = http.post(f"{base_url}/chat/completions", json=body, headers=AUTH).text  # a clean chunked end
    assert "[DONE]" not in text and 'finish_reason":"stop' not in text
    events = http.post(f"{base_url}/responses", json={**body, "input": "hi"}, headers=AUTH).text
    assert "response.output_text.delta" in events and "response.completed" not in events


def test_content_filter(client: openai.OpenAI, billing_for: Billing) -> None:
    raw = client.chat.completions.with_raw_response.create(model=f"{MODEL}-fault-content-filter", messages=user("hi"))
    r = raw.parse()
    assert r.choices[0].finish_reason == "content_filter" and r.usage.completion_tokens == 12
    assert billing_for(raw.headers["x-request-id"]).outcome == "content_filter"
    s = client.chat.completions.create(model=f"{MODEL}-fault-content-filter", messages=user("hi"), stream=True)
    assert [c.choices[0].finish_reason for c in s][-1] == "content_filter"
    resp = client.responses.create(model="gpt-4.1-fault-content-filter", input="hi")
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "content_filter"


def test_request_validation(base_url: str, http: httpx.Client) -> None:
    url = f"{base_url}/chat/completions"
    r = http.post(url, json={"model": MODEL, "messages": user("hi")})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert http.post(url, content=b"{nope", headers=AUTH).status_code == 400
    r = http.post(url, json={"messages": user("hi")}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = http.post(url, json={"model": MODEL}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"] == {
        "message": "Missing required parameter: 'messages'.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": None,
    }
    r = http.post(url, json={"model": f"{MODEL}-fault-bogus", "messages": user("hi")}, headers=AUTH)
    assert r.status_code == 400 and "bogus" in r.json()["error"]["message"]
    assert r.headers["x-request-id"] and r.headers["x-ratelimit-limit-requests"]
    r = http.get(f"{base_url}/nope", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["message"] == "Invalid URL (GET /openai/v1/nope)."
    assert r.headers["x-request-id"]
