"""End to end: the native streaming API (typed SSE events), heartbeats, and client-disconnect cancellation."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import pytest

from gateway.schema import STREAM_EVENT_ADAPTER
from tests.serve.keys import AUTH
from tests.support import SLOW_FIRST_TOKEN_MS

pytestmark = pytest.mark.ray


def _native_events(gateway_url: str, body: dict) -> list:
    events = []
    with httpx.stream("POST", f"{gateway_url}/v1/gateway/chat", json=body, timeout=20, headers=AUTH) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                event = STREAM_EVENT_ADAPTER.validate_json(line[6:])
                assert event.type == name
                events.append(event)
    return events


def test_native_stream_is_typed_start_deltas_usage_finish(gateway_url, gw):
    messages = [{"role": "user", "content": "a native stream with many words in it"}]
    events = _native_events(
        gateway_url,
        {"model": "gpt-4o-mini", "messages": messages, "metadata": {"daemon": "router", "turn_id": "turn-1"}},
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    assert events[0].provider == "openai" and events[0].model == "gpt-4o-mini"
    text = "".join(e.text for e in events if e.type == "text_delta")
    assert text == gw.chat.completions.create(model="gpt-4o-mini", messages=messages).choices[0].message.content
    finish = events[-1]
    assert finish.finish_reason == "stop" and finish.usage.output_tokens > 0 and finish.latency_ms > 0
    usage = finish.usage  # gpt-4o-mini at $0.15 / $0.60 per million tokens
    assert finish.cost_usd == (usage.input_tokens * Decimal("0.15") + usage.output_tokens * Decimal("0.6")) / 10**6


def test_native_stream_sends_heartbeats_while_upstream_is_silent(gateway_url):
    events = _native_events(
        gateway_url, {"model": "gpt-4o-mini-fault-slow-first-token", "messages": [{"role": "user", "content": "slow"}]}
    )
    first_text = next(i for i, e in enumerate(events) if e.type == "text_delta")
    heartbeats = [e for e in events[:first_text] if e.type == "heartbeat"]
    # the first token is SLOW_FIRST_TOKEN_MS late and heartbeats come every 0.15 s
    assert len(heartbeats) >= SLOW_FIRST_TOKEN_MS // 300
    assert events[-1].type == "finish"


def test_openai_stream_keepalives_are_comments_the_sdk_ignores(gateway_url, gw):
    raw = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        timeout=20,
        json={
            "model": "gpt-4o-mini-fault-slow-first-token",
            "stream": True,
            "messages": [{"role": "user", "content": "slow"}],
        },
        headers=AUTH,
    ).text
    assert ": keep-alive" in raw
    chunks = list(
        gw.chat.completions.create(
            model="gpt-4o-mini-fault-slow-first-token", stream=True, messages=[{"role": "user", "content": "slow"}]
        )
    )
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_native_error_event_mid_stream(gateway_url):
    events = _native_events(
        gateway_url, {"model": "gpt-4o-mini-fault-cut", "messages": [{"role": "user", "content": "cut me"}]}
    )
    assert events[-1].type == "error"
    delivered = any(e.type == "text_delta" for e in events)
    allowed = {"truncated_stream"} if delivered else {"truncated_stream", "connection"}
    assert events[-1].error.kind in allowed
    assert not any(e.type == "finish" for e in events)


def test_native_api_rejects_bad_body_naming_the_field(gateway_url):
    r = httpx.post(
        f"{gateway_url}/v1/gateway/chat", json={"model": "gpt-4o-mini", "messages": [{"role": "tool"}]}, headers=AUTH
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"].startswith("messages.0")


def test_client_disconnect_cancels_the_upstream_call(gateway_url, emulator):
    content = f"disconnect probe {time.time_ns()}"
    with httpx.stream(
        "POST",
        f"{gateway_url}/v1/chat/completions",
        timeout=20,
        json={"model": "patient-stall", "stream": True, "messages": [{"role": "user", "content": content}]},
        headers=AUTH,
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                break  # got real content; now hang up while the upstream is stalled
    # The upstream (read timeout 60 s, emulator stall cap 30 s) only ends early if the gateway closed it.
    deadline = time.monotonic() + 10
    record = None
    while record is None and time.monotonic() < deadline:
        ids = {
            r.request_id
            for r in emulator.recorder.requests
            if isinstance(r.body, dict) and r.body.get("messages", [{}])[0].get("content") == content
        }
        record = next((b for b in emulator.recorder.billing if b.request_id in ids), None)
        time.sleep(0.05)
    assert record is not None, "the upstream stream was not closed after the client disconnected"
    assert record.outcome == "stall" and record.output_tokens > 0  # billed for what was sent before the hang-up
