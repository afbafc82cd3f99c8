"""End to end: model `auto` routes by task class, retries curable errors, falls back, and says what it did."""

from __future__ import annotations

from collections import Counter

import httpx
import openai
import pytest

from tests.serve.conftest import REPLICAS
from tests.serve.keys import AUTH
from tests.serve.views import breaker as _breaker
from tests.serve.views import every_replica_view, shared_open

pytestmark = pytest.mark.ray


def test_auto_falls_back_past_an_overloaded_model_and_reports_the_route(gw, emulator):
    before = sum(1 for r in emulator.recorder.requests if "fault-503" in str(r.body))
    raw = gw.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "quick one"}],
        extra_body={"gateway": {"task_class": "quick"}},
    )
    answer = raw.parse()
    assert answer.model == "claude-haiku-4-5" and raw.headers["x-gateway-provider"] == "anthropic"
    # the 503 asks for Retry-After 1 s, longer than this policy waits (0.5 s): fall back at once, no retry
    assert raw.headers["x-gateway-attempts"] == "2"
    assert raw.headers["x-gateway-route"] == "quick:gpt-4o-mini-fault-503>claude-haiku-4-5>gpt-4o-mini"
    assert sum(1 for r in emulator.recorder.requests if "fault-503" in str(r.body)) - before == 1


def test_a_server_error_is_retried_on_the_same_model(gw):
    raw = gw.chat.completions.with_raw_response.create(
        model="gpt-4o-mini-fault-500-once", messages=[{"role": "user", "content": "retry me, unique 7c1"}]
    )
    assert raw.parse().model == "gpt-4o-mini-fault-500-once" and raw.headers["x-gateway-attempts"] == "2"


def test_streams_fall_back_before_the_first_byte(gw):
    chunks = list(gw.chat.completions.create(model="auto", stream=True, messages=[{"role": "user", "content": "s"}],
                                             extra_body={"gateway": {"task_class": "quick"}}))  # fmt: skip
    assert chunks[0].model == "claude-haiku-4-5" and chunks[-1].choices[0].finish_reason == "stop"


def test_context_length_moves_to_the_next_model_without_retrying(gw, emulator):
    raw = gw.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "long context"}], response_format={"type": "json_object"}
    )  # JSON mode infers the `code` class
    assert raw.parse().model == "gemini-2.5-flash" and raw.headers["x-gateway-attempts"] == "2"


def test_content_filter_is_final_no_fallback(gw):
    with pytest.raises(openai.BadRequestError) as info:
        gw.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}],
                                   extra_body={"gateway": {"task_class": "planning"}})  # fmt: skip
    assert info.value.code == "content_filter"


def test_requested_model_uses_the_callers_own_fallbacks(gw):
    raw = gw.chat.completions.with_raw_response.create(
        model="gpt-4o-mini-fault-quota", messages=[{"role": "user", "content": "x"}],
        extra_body={"fallbacks": ["gemini-2.5-flash"]},
    )  # fmt: skip
    assert raw.parse().model == "gemini-2.5-flash" and raw.headers["x-gateway-attempts"] == "2"


@pytest.mark.parametrize("task", ["quick", "code", "planning"])
def test_dry_run_explains_the_plan_for_each_task_class(gateway_url, task):
    r = httpx.post(f"{gateway_url}/v1/gateway/route", headers=AUTH, json={
        "model": "auto", "messages": [{"role": "user", "content": "x"}], "gateway": {"task_class": task}})  # fmt: skip
    plan = r.json()
    assert r.status_code == 200 and plan["task_class"] == task
    assert plan["candidates"] and all(c["reason"].startswith(f"{task} chain #") for c in plan["candidates"])
    assert plan["route"].startswith(f"{task}:") and plan["candidates"][0]["provider"]
    assert all(c["prompt_tokens"] >= 8 for c in plan["candidates"])  # framing + "x", BPE-counted


def _with_fallback(gw, model: str):
    return gw.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "breaker"}], extra_body={"fallbacks": ["gpt-4o-mini"]}
    )


def test_a_breaker_opened_by_failures_on_one_replica_reaches_the_others(gw, gateway_url, emulator):
    model = "gpt-4.1-mini-fault-503"

    def calls() -> int:
        return sum(1 for r in emulator.recorder.requests if model in str(r.body))

    before, failures_seen = calls(), Counter()
    for _ in range(3):  # three health failures (threshold 3) between the replicas: the shared breaker opens
        raw = _with_fallback(gw, model)
        assert raw.parse().model == "gpt-4o-mini" and raw.headers["x-gateway-attempts"] == "2"
        failures_seen[raw.headers["x-gateway-replica"]] += 1
    assert calls() - before == 3
    views = every_replica_view(gateway_url, shared_open(model))
    # at least one replica saw fewer than 3 failures itself: only the shared state can have opened it there
    assert min(failures_seen[r] for r in views) < 3
    skipped_on: set[str] = set()
    for _ in range(40):
        raw = _with_fallback(gw, model)
        assert raw.parse().model == "gpt-4o-mini" and raw.headers["x-gateway-attempts"] == "1"  # skipped, not tried
        skipped_on.add(raw.headers["x-gateway-replica"])
        if len(skipped_on) == REPLICAS:
            break
    assert len(skipped_on) == REPLICAS and calls() - before == 3


def test_providers_endpoint_shows_breakers_statistics_and_errors(gateway_url, gw):
    for _ in range(3):
        gw.chat.completions.create(model="gpt-4o-mini-fault-503", messages=[{"role": "user", "content": "p"}],
                                   extra_body={"fallbacks": ["gpt-4o-mini"]})  # fmt: skip
    views = every_replica_view(gateway_url, shared_open("gpt-4o-mini-fault-503"))
    for view in views.values():
        assert view["scope"] == "cluster" and not view["snapshot"]["stale"]
        assert view["providers"]["bedrock@eu-west-1"]["region"] == "eu-west-1"
        failing = _breaker(view, "openai", "gpt-4o-mini-fault-503")
        assert failing["state"] == "open" and failing["retry_in_s"] > 0 and failing["failures"] >= 3
        healthy = _breaker(view, "openai", "gpt-4o-mini")
        assert healthy["state"] == "closed" and healthy["requests"] >= 3 and healthy["ewma_latency_ms"] > 0
        errors = view["providers"]["openai"]["recent_errors"]
        assert any(e["model"] == "gpt-4o-mini-fault-503" and e["kind"] == "overloaded" for e in errors)


def test_embeddings_auto_follows_the_policy_and_reports_the_route(gw):
    raw = gw.embeddings.with_raw_response.create(model="auto", input=["a", "b"], dimensions=512,
                                                 encoding_format="float")  # fmt: skip
    result = raw.parse()
    assert result.model == "text-embedding-3-small" and len(result.data) == 2 and len(result.data[0].embedding) == 512
    assert raw.headers["x-gateway-route"] == "embeddings:text-embedding-3-small"


def test_a_stream_broken_midway_continues_on_a_prefill_capable_fallback(gw, emulator):
    # a stall (a few tokens, then silence until the 2 s read timeout) rather than a cut: a cut right after the
    # first bytes can reset the connection before they are delivered, which would be a clean fallback instead
    chunks = list(gw.chat.completions.create(
        model="gpt-4o-mini-fault-stall", stream=True, messages=[{"role": "user", "content": "continue me 51f"}],
        extra_body={"fallbacks": ["claude-haiku-4-5"]},
    ))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[0].model == "gpt-4o-mini-fault-stall"
    continued = [
        r for r in emulator.recorder.requests if r.provider == "anthropic" and "continue me 51f" in str(r.body)
    ]
    prefill = continued[-1].body["messages"][-1]
    assert prefill["role"] == "assistant"
    sent = prefill["content"] if isinstance(prefill["content"], str) else prefill["content"][0]["text"]
    assert sent and text.startswith(sent) and len(text) > len(sent)  # what was sent, then the continuation


@pytest.mark.parametrize(
    ("fault", "upstream_calls"),
    [
        ("429", 1),  # Retry-After 1 s is longer than this policy waits (0.5 s): straight to the next model
        ("429-no-retry-after", 1),  # no Retry-After, but OpenAI's x-ratelimit-reset-* say 1 s: the same
        ("reset", 2),  # connection reset before any header: retried once, then the next model (see below)
        ("503", 1),  # overloaded with Retry-After 1 s: as for 429
    ],
)
def test_persistent_failures_are_bounded_then_fall_back(gw, emulator, fault, upstream_calls):
    upstream = f"gpt-4o-mini-fault-{fault}"
    marker = f"bounded {fault} 93d"

    def calls() -> int:
        return sum(1 for r in emulator.recorder.requests if marker in str(r.body) and upstream in str(r.body))

    raw = gw.chat.completions.with_raw_response.create(
        model=f"bounded-{fault}",
        messages=[{"role": "user", "content": marker}],
        extra_body={"fallbacks": ["claude-haiku-4-5"]},
    )
    assert raw.parse().model == "claude-haiku-4-5"
    # a reset looks like a stale pooled socket: a replica that last saw the upstream answer resends it once
    # (not an attempt), and none after that resend failed
    resent = calls() - upstream_calls
    assert resent == 0 or (fault == "reset" and resent == 1), f"{calls()} upstream calls"
    assert raw.headers["x-gateway-attempts"] == str(upstream_calls + 1)


def test_a_model_without_a_price_is_refused_before_any_call(gw, emulator):
    before = sum(1 for r in emulator.recorder.requests if "mystery-model" in str(r.body))
    with pytest.raises(openai.BadRequestError) as info:
        gw.chat.completions.create(model="unpriced", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_unpriced" and "price" in info.value.message
    assert sum(1 for r in emulator.recorder.requests if "mystery-model" in str(r.body)) == before
    raw = gw.chat.completions.with_raw_response.create(
        model="unpriced", messages=[{"role": "user", "content": "x"}], extra_body={"fallbacks": ["gpt-4o-mini"]}
    )
    assert raw.parse().model == "gpt-4o-mini" and raw.headers["x-gateway-attempts"] == "1"
    assert float(raw.headers["x-gateway-cost-usd"]) > 0


def test_embeddings_are_priced(gw):
    raw = gw.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["price me"])
    result = raw.parse()
    assert result.usage.prompt_tokens > 0 and float(raw.headers["x-gateway-cost-usd"]) > 0
