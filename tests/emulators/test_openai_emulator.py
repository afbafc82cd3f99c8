"""The OpenAI emulator driven by the official `openai` SDK (sync and async) and by raw httpx for the wire."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.emulators import Emulator
from tests.emulators.wire_data import AUTH, MODEL, TIME, WEATHER, Billing, sse_lines, user

# ---------------------------------------------------------------- chat completions


def test_chat_non_stream_usage_headers_and_billing(client: openai.OpenAI, billing_for: Billing) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "system", "content": "be brief"}, *user("hi there")]
    )
    r = raw.parse()
    assert r.object == "chat.completion" and r.model == MODEL
    assert r.choices[0].message.content.startswith(f"Hello from {MODEL}. You said: hi there")
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 24 == len(r.choices[0].message.content.split())
    assert r.usage.prompt_tokens == 4  # "be brief" + "hi there"
    assert r.usage.total_tokens == 28
    for name in ("limit", "remaining", "reset"):
        for kind in ("requests", "tokens"):
            assert raw.headers[f"x-ratelimit-{name}-{kind}"]
    assert raw.headers["x-ratelimit-reset-requests"] == "1s"
    bill = billing_for(raw.headers["x-request-id"])
    assert (bill.input_tokens, bill.output_tokens, bill.stream, bill.outcome) == (4, 24, False, "ok")
    assert (bill.provider, bill.model, bill.endpoint) == ("openai", MODEL, "chat.completions")


def test_chat_stream_reassembles_to_the_non_stream_answer(client: openai.OpenAI, billing_for: Billing) -> None:
    plain = client.chat.completions.create(model=MODEL, messages=user("tell me a story please"))
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user("tell me a story please"), stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    bill = billing_for(raw.headers["x-request-id"])
    assert (bill.input_tokens, bill.output_tokens, bill.stream, bill.outcome) == (5, 24, True, "ok")


def test_chat_stream_wire_format(base_url: str, http: httpx.Client) -> None:
    body = {"model": MODEL, "messages": user("hi"), "stream": True}
    with http.stream("POST", f"{base_url}/chat/completions", json=body, headers=AUTH) as r:
        assert r.headers["transfer-encoding"] == "chunked"
        assert r.headers["x-request-id"].startswith("req_")
        lines = sse_lines(r.read().decode())
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert "usage" not in events[0]  # no include_usage -> no usage key at all
    assert events[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


def test_tool_call_and_tool_result_round_trip(client: openai.OpenAI) -> None:
    messages: list[Any] = user("what is the weather in Paris?")
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER, TIME])
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.usage.prompt_tokens == 6 + len(json.dumps([WEATHER, TIME], sort_keys=True).split())
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    assert set(args) == {"city", "days", "unit"}
    assert isinstance(args["city"], str) and isinstance(args["days"], int) and args["unit"] == "c"
    messages += [
        r.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny and 21C"},
    ]
    r2 = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER, TIME])
    assert r2.choices[0].finish_reason == "stop"
    assert "sunny and 21C" in r2.choices[0].message.content
    none = client.chat.completions.create(model=MODEL, messages=user("hi"), tools=[WEATHER], tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason == "stop"


def test_parallel_and_named_tool_calls_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=user("do these in parallel"), tools=[WEATHER, TIME], stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for tc in choice.delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"name": "", "arguments": ""})
            slot["name"] += tc.function.name or "" if tc.function else ""
            slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"])["unit"] == "c" and json.loads(calls[1]["arguments"]) == {}
    single = client.chat.completions.create(
        model=MODEL, messages=user("do these in parallel"), tools=[WEATHER, TIME], parallel_tool_calls=False
    )
    assert len(single.choices[0].message.tool_calls) == 1
    named = client.chat.completions.create(
        model=MODEL,
        messages=user("hi"),
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["get_time"]


def test_json_modes(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=user("json please"), response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "ok": {"type": "boolean"},
        },
        "required": ["name", "age", "tags", "ok"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model=MODEL,
        messages=user("json"),
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema, "strict": True}},
    )
    value = json.loads(r.choices[0].message.content)
    assert set(value) == {"name", "age", "tags", "ok"}
    assert isinstance(value["age"], int) and isinstance(value["tags"], list) and value["ok"] is True


def test_max_tokens_stop_reasoning_and_images(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=user("hi"), max_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    assert r.choices[0].message.content == f"Hello from {MODEL}. You said:"
    r = client.chat.completions.create(model=MODEL, messages=user("hi"), max_completion_tokens=3, stream=True)
    assert [c.choices[0].finish_reason for c in r][-1] == "length"
    r = client.chat.completions.create(model=MODEL, messages=user("hi"), stop=["You said"])
    assert r.choices[0].message.content == f"Hello from {MODEL}." and r.choices[0].finish_reason == "stop"
    r = client.chat.completions.create(model="o3-mini", messages=user("hi"))
    assert r.usage.completion_tokens_details.reasoning_tokens == 16 and r.usage.completion_tokens == 16 + 24
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
    msg = [{"role": "user", "content": [{"type": "text", "text": "what is this"}, image]}]
    r = client.chat.completions.create(model=MODEL, messages=msg)
    assert r.usage.prompt_tokens == 3 + 85


def test_prompt_caching_of_a_long_system_message(client: openai.OpenAI, billing_for: Billing) -> None:
    system = f"cache-{uuid.uuid4().hex} " + " ".join(["rule"] * 299)  # 300 words
    msgs = [{"role": "system", "content": system}, *user("hi")]
    first = client.chat.completions.create(model=MODEL, messages=msgs)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=msgs)
    second = raw.parse()
    assert second.usage.prompt_tokens_details.cached_tokens == 256 and second.usage.prompt_tokens == 301
    assert billing_for(raw.headers["x-request-id"]).cached_input_tokens == 256


def test_timing_overrides(client: openai.OpenAI) -> None:
    t0 = time.monotonic()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=user("hi"),
        stream=True,
        extra_headers={"x-emulator-ttft-ms": "150", "x-emulator-inter-token-ms": "10", "x-emulator-tokens": "6"},
    )
    stamps = [(time.monotonic() - t0, c.choices[0].delta.content) for c in stream]
    first_content = next(t for t, text in stamps if text)
    assert first_content >= 0.14 and stamps[-1][0] >= 0.14 + 5 * 0.009
    assert sum(1 for _, text in stamps if text) == 6
    t0 = time.monotonic()
    client.chat.completions.create(
        model=f"{MODEL}-fault-slow-first-token", messages=user("hi"), extra_headers={"x-emulator-slow-ms": "200"}
    )
    assert time.monotonic() - t0 >= 0.19


# ---------------------------------------------------------------- embeddings, models


def test_embeddings_base64_default_and_float(client: openai.OpenAI, emulator: Emulator, billing_for: Billing) -> None:
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["hello world", "bye"])
    e = raw.parse()
    sent = next(r for r in list(emulator.recorder.requests) if r.request_id == raw.headers["x-request-id"])
    assert sent.body["encoding_format"] == "base64"  # the SDK's default on the wire
    assert [len(d.embedding) for d in e.data] == [1536, 1536] and [d.index for d in e.data] == [0, 1]
    assert math.isclose(math.fsum(x * x for x in e.data[0].embedding), 1.0, rel_tol=1e-4)
    assert e.usage.prompt_tokens == e.usage.total_tokens == 3
    assert billing_for(raw.headers["x-request-id"]).input_tokens == 3
    f = client.embeddings.create(model="text-embedding-3-small", input="hello world", encoding_format="float")
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(f.data[0].embedding, e.data[0].embedding, strict=True))
    d = client.embeddings.create(model="text-embedding-3-large", input=[[1, 2, 3]], dimensions=256)
    assert len(d.data[0].embedding) == 256 and d.usage.prompt_tokens == 3
    assert len(client.embeddings.create(model="text-embedding-3-large", input="x").data[0].embedding) == 3072


def test_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in ids and "text-embedding-3-small" in ids


# ---------------------------------------------------------------- responses API


def test_responses_non_stream_and_stream(client: openai.OpenAI, base_url: str, http: httpx.Client) -> None:
    r = client.responses.create(model="gpt-4.1-mini", instructions="be brief", input="hi there")
    assert r.status == "completed" and r.output_text.startswith("Hello from gpt-4.1-mini. You said: hi there")
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (4, 24, 28)
    with client.responses.stream(model="gpt-4.1-mini", instructions="be brief", input="hi there") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == r.output_text and final.usage == r.usage
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    body = {"model": "gpt-4.1-mini", "input": [{"role": "user", "content": "hi"}], "stream": True}
    text = http.post(f"{base_url}/responses", json=body, headers=AUTH).text
    blocks = [b.split("\n") for b in text.strip().split("\n\n")]
    assert all(b[0].startswith("event: ") and b[1].startswith("data: ") for b in blocks)
    seqs = [json.loads(b[1][6:])["sequence_number"] for b in blocks]
    assert seqs == list(range(len(blocks))) and "[DONE]" not in text
    text = http.post(f"{base_url}/responses", json={**body, "max_output_tokens": 3}, headers=AUTH).text
    last = json.loads(text.strip().split("\n\n")[-1].split("\n")[1][6:])
    assert (
        last["type"] == "response.incomplete"
        and last["response"]["incomplete_details"]["reason"] == "max_output_tokens"
    )
    assert last["response"]["usage"]["output_tokens"] == 3


def test_responses_function_call_round_trip(client: openai.OpenAI) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"], "strict": True}
    r = client.responses.create(model="gpt-4.1-mini", input="weather?", tools=[tool])
    (call,) = r.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments)["unit"] == "c"
    with client.responses.stream(model="gpt-4.1-mini", input="weather?", tools=[tool]) as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_response().output[0]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    assert streamed.arguments == call.arguments and streamed.name == "get_weather"
    follow = [
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "rainy"},
    ]
    r2 = client.responses.create(model="gpt-4.1-mini", input=follow, tools=[tool])
    assert "rainy" in r2.output_text and r2.status == "completed"
    short = client.responses.create(model="gpt-4.1-mini", input="hi", max_output_tokens=4)
    assert short.status == "incomplete" and short.incomplete_details.reason == "max_output_tokens"
    assert short.usage.output_tokens == 4


# ---------------------------------------------------------------- async SDK and control endpoints


@pytest.mark.asyncio
async def test_async_client_stream_and_disconnect_billing(base_url: str, billing_for: Billing) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as client:
        r = await client.chat.completions.create(model=MODEL, messages=user("async hi"))
        assert r.usage.completion_tokens == 24
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=user("async hi"), stream=True, extra_headers={"x-emulator-inter-token-ms": "20"}
        )
        stream = raw.parse()
        seen = 0
        async for chunk in stream:
            seen += 1 if chunk.choices[0].delta.content else 0
            if seen == 3:
                break
        await stream.close()
        bill = await asyncio.to_thread(billing_for, raw.headers["x-request-id"])
    assert bill.outcome == "disconnected" and 3 <= bill.output_tokens < 24


@pytest.mark.asyncio
async def test_async_start_stop_and_control_endpoints() -> None:
    em = Emulator()
    url = await em.start()
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/health")).json() == {"status": "ok"}
            await http.post("/openai/v1/chat/completions", json={"model": MODEL, "messages": user("x")}, headers=AUTH)
            (req,) = (await http.get("/_emulator/requests")).json()
            assert req["body"]["model"] == MODEL and req["headers"]["authorization"] == "Bearer sk-test"
            (bill,) = (await http.get("/_emulator/billing")).json()
            assert bill["output_tokens"] == 24 and bill["request_id"] == req["request_id"]
            await http.post("/_emulator/reset")
            assert (await http.get("/_emulator/requests")).json() == [] and not em.recorder.billing
    finally:
        await em.stop()


@pytest.mark.asyncio
async def test_concurrent_streams(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as client:

        async def one(i: int) -> str:
            stream = await client.chat.completions.create(model=MODEL, messages=user(f"n{i}"), stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream])

        answers = await asyncio.gather(*(one(i) for i in range(50)))
    assert all(a.startswith(f"Hello from {MODEL}. You said: n{i} ") for i, a in enumerate(answers))


def test_command_line_runs_and_stops_on_sigterm(http: httpx.Client) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.emulators", "--port", "0", "--answer-tokens", "3"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[3]
        r = http.post(f"{url}/openai/v1/chat/completions", json={"model": MODEL, "messages": user("x")}, headers=AUTH)
        assert r.json()["choices"][0]["message"]["content"] == f"Hello from {MODEL}."
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
