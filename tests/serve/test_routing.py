"""End to end: model `auto` routes by task class, retries curable errors, falls back, and says what it did."""

from __future__ import annotations

import openai
import pytest

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
    import httpx

    r = httpx.post(f"{gateway_url}/v1/gateway/route", json={
        "model": "auto", "messages": [{"role": "user", "content": "x"}], "gateway": {"task_class": task}})  # fmt: skip
    plan = r.json()
    assert r.status_code == 200 and plan["task_class"] == task
    assert plan["candidates"] and all(c["reason"].startswith(f"{task} chain #") for c in plan["candidates"])
    assert plan["route"].startswith(f"{task}:") and plan["candidates"][0]["provider"]


def test_a_failing_model_trips_its_breaker_and_is_skipped(gw, emulator):
    def calls() -> int:
        return sum(1 for r in emulator.recorder.requests if "gpt-4.1-mini-fault-503" in str(r.body))

    before = calls()
    for _ in range(3):  # three health failures (threshold 3): the breaker opens
        raw = gw.chat.completions.with_raw_response.create(
            model="gpt-4.1-mini-fault-503", messages=[{"role": "user", "content": "breaker"}],
            extra_body={"fallbacks": ["gpt-4o-mini"]})  # fmt: skip
        assert raw.parse().model == "gpt-4o-mini" and raw.headers["x-gateway-attempts"] == "2"
    assert calls() - before == 3
    raw = gw.chat.completions.with_raw_response.create(
        model="gpt-4.1-mini-fault-503", messages=[{"role": "user", "content": "breaker"}],
        extra_body={"fallbacks": ["gpt-4o-mini"]})  # fmt: skip
    assert raw.parse().model == "gpt-4o-mini" and raw.headers["x-gateway-attempts"] == "1"  # skipped, not tried
    assert calls() - before == 3


def test_providers_endpoint_shows_breaker_states(gateway_url, gw):
    import httpx

    for _ in range(3):  # make sure this replica has seen the failing model (threshold 3)
        gw.chat.completions.create(model="gpt-4o-mini-fault-503", messages=[{"role": "user", "content": "p"}],
                                   extra_body={"fallbacks": ["gpt-4o-mini"]})  # fmt: skip
    view = httpx.get(f"{gateway_url}/v1/gateway/providers").json()
    assert view["scope"] == "replica" and view["providers"]["bedrock"]["regions"] == ["us-east-1", "eu-west-1"]
    states = {(b["provider"], b["model"]): b for b in view["breakers"]}
    failing = states[("openai", "gpt-4o-mini-fault-503")]
    assert failing["state"] == "open" and failing["retry_in_s"] > 0
    assert states[("openai", "gpt-4o-mini")]["state"] == "closed"
