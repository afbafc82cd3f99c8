"""The Anthropic emulator driven by the official `anthropic` SDK, and by raw httpx where the SDK hides the wire."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import pytest

from gateway.emulators import Emulator, EmulatorSettings
from tests.emulators.wire_data import Billing

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MODEL = "claude-sonnet-4-5"
KEY = {"x-api-key": "k"}
WEATHER = {
    "name": "get_weather",
    "description": "w",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "days", "unit"],
    },
}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def url(emulator: Emulator) -> str:
    assert emulator.base_url
    return emulator.base_url + "/anthropic"


@pytest.fixture(scope="module")
def claude(url: str) -> Iterator[anthropic.Anthropic]:
    c = anthropic.Anthropic(api_key="k", base_url=url, max_retries=0, timeout=10)
    yield c
    c.close()


def events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse an SSE body, asserting that every event has an `event:` line matching its data `type`."""
    out = []
    for block in text.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), block
        name, data = name_line[7:], json.loads(data_line[6:])
        assert data["type"] == name
        out.append((name, data))
    return out


def blocks(content: list[Any]) -> list[dict[str, Any]]:
    """Content blocks as dicts (the stream helper returns Parsed* blocks with an extra `parsed_output`)."""
    return [{k: v for k, v in b.model_dump().items() if k != "parsed_output"} for b in content]


def _marked(emulator: Emulator, marker: str) -> str:
    (record,) = [r for r in list(emulator.recorder.requests) if marker in json.dumps(r.body)]
    return record.request_id


# ---------------------------------------------------------------- messages


def test_non_stream_answer_usage_headers_and_billing(
    claude: anthropic.Anthropic, emulator: Emulator, http: httpx.Client, billing_for: Billing
) -> None:
    raw = claude.messages.with_raw_response.create(
        model=MODEL, max_tokens=100, system="be brief", messages=user("hi there"),
        extra_body={"temperature": 0.5, "top_p": 0.9},
    )  # fmt: skip
    m = raw.parse()
    assert m.type == "message" and m.role == "assistant" and m.model == MODEL and m.id.startswith("msg_")
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    (block,) = m.content
    assert block.type == "text" and block.text.startswith(f"Hello from {MODEL}. You said: hi there")
    openai_answer = http.post(
        f"{emulator.base_url}/openai/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "system", "content": "be brief"}, *user("hi there")]},
        headers={"authorization": "Bearer sk"},
    ).json()
    assert block.text == openai_answer["choices"][0]["message"]["content"]  # same text across providers
    u = m.usage
    assert (u.input_tokens, u.output_tokens, u.cache_creation_input_tokens, u.cache_read_input_tokens) == (4, 24, 0, 0)
    rid = raw.headers["request-id"]
    assert rid.startswith("req_")
    for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
        for what in ("limit", "remaining", "reset"):
            assert raw.headers[f"anthropic-ratelimit-{kind}-{what}"]
    assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    bill = billing_for(rid)
    assert (bill.provider, bill.model, bill.endpoint, bill.stream, bill.outcome) == (
        "anthropic", MODEL, "messages", False, "ok",
    )  # fmt: skip
    assert (bill.input_tokens, bill.output_tokens, bill.cached_input_tokens) == (4, 24, 0)
    blocks = [{"type": "text", "text": "be"}, {"type": "text", "text": "brief"}]
    listed = claude.messages.create(model=MODEL, max_tokens=100, system=blocks, messages=user("hi there"))
    assert listed.content[0].text == block.text and listed.usage.input_tokens == 4
    sent = next(r for r in list(emulator.recorder.requests) if r.request_id == rid)
    assert sent.provider == "anthropic" and sent.headers["authorization"] == "Bearer k"


def test_stream_helper_equals_non_stream(claude: anthropic.Anthropic, billing_for: Billing) -> None:
    plain = claude.messages.create(model=MODEL, max_tokens=100, messages=user("tell me a story please"))
    with claude.messages.stream(model=MODEL, max_tokens=100, messages=user("tell me a story please")) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
        rid = stream.response.headers["request-id"]
    assert len(pieces) == 8 and "".join(pieces) == plain.content[0].text  # 24 tokens, three to a delta
    assert blocks(final.content) == blocks(plain.content) and final.stop_reason == "end_turn"
    assert final.usage == plain.usage  # message_start and message_delta usage merged
    bill = billing_for(rid)
    assert (bill.input_tokens, bill.output_tokens, bill.stream, bill.outcome) == (5, 24, True, "ok")


def test_raw_stream_event_order(url: str, http: httpx.Client) -> None:
    body = {"model": MODEL, "max_tokens": 100, "messages": user("hi"), "stream": True}
    with http.stream("POST", f"{url}/v1/messages", json=body, headers=KEY) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["transfer-encoding"] == "chunked" and r.headers["request-id"].startswith("req_")
        evs = events(r.read().decode())
    names = [n for n, _ in evs]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[3:-3] == ["content_block_delta"] * 8  # 24 tokens, three to a delta
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = evs[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] == 1
    assert evs[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert evs[3][1]["delta"]["type"] == "text_delta" and len(evs[3][1]["delta"]["text"].split()) == 3
    assert evs[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 24},
    }


def test_thinking_blocks_stream_and_count(claude: anthropic.Anthropic, url: str, http: httpx.Client) -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    m = claude.messages.create(model=MODEL, max_tokens=2048, thinking=thinking, messages=user("hi"))
    assert [b.type for b in m.content] == ["thinking", "text"] and m.content[0].signature
    assert len(m.content[0].thinking.split()) == 16
    assert m.usage.output_tokens == 16 + 24 and m.usage.output_tokens_details.thinking_tokens == 16
    named = claude.messages.create(model="claude-x-thinking", max_tokens=100, messages=user("hi"))
    assert named.content[0].type == "thinking"
    with claude.messages.stream(model=MODEL, max_tokens=2048, thinking=thinking, messages=user("hi")) as stream:
        final = stream.get_final_message()
    assert blocks(final.content) == blocks(m.content) and final.usage == m.usage
    body = {"model": MODEL, "max_tokens": 2048, "thinking": thinking, "messages": user("hi"), "stream": True}
    body["tools"] = [WEATHER]
    evs = events(http.post(f"{url}/v1/messages", json=body, headers=KEY).text)
    deltas = [d["delta"]["type"] for n, d in evs if n == "content_block_delta"]
    assert deltas == ["thinking_delta"] * 6 + ["signature_delta"] + ["input_json_delta"] * len(deltas[7:])
    assert (
        evs[-2][1]["usage"]
        == {  # 16 thinking tokens in six deltas; the tool's name and its JSON pieces
            "output_tokens": 16 + 1 + len(deltas[7:]),
            "output_tokens_details": {"thinking_tokens": 16},
        }
    )
    starts = [d["content_block"]["type"] for n, d in evs if n == "content_block_start"]
    assert starts == ["thinking", "tool_use"]
    with pytest.raises(anthropic.BadRequestError, match="budget_tokens"):
        claude.messages.create(model=MODEL, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 10},
                               messages=user("hi"))  # fmt: skip


# ---------------------------------------------------------------- tools


def test_tool_round_trip(claude: anthropic.Anthropic) -> None:
    messages: list[Any] = user("what is the weather in Paris?")
    r = claude.messages.create(model=MODEL, max_tokens=100, messages=messages, tools=[WEATHER, TIME])
    assert r.stop_reason == "tool_use"
    (call,) = r.content
    assert call.type == "tool_use" and call.name == "get_weather" and call.id.startswith("toolu_")
    assert set(call.input) == {"city", "days", "unit"} and call.input["unit"] == "c"
    assert isinstance(call.input["days"], int)
    assert r.usage.input_tokens == 6 + len(json.dumps([WEATHER, TIME], sort_keys=True).split())
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny and 21C"}]},
    ]
    r2 = claude.messages.create(model=MODEL, max_tokens=100, messages=messages, tools=[WEATHER, TIME])
    assert r2.stop_reason == "end_turn" and "sunny and 21C" in r2.content[0].text
    none = claude.messages.create(
        model=MODEL, max_tokens=100, messages=user("hi"), tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert [b.type for b in none.content] == ["text"] and none.stop_reason == "end_turn"
    named = claude.messages.create(
        model=MODEL, max_tokens=100, messages=user("hi"), tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_time"},
    )  # fmt: skip
    assert [(b.name, b.input) for b in named.content] == [("get_time", {})]
    anyone = claude.messages.create(
        model=MODEL, max_tokens=100, messages=user("hi"), tools=[WEATHER], tool_choice={"type": "any"}
    )
    assert anyone.content[0].name == "get_weather"
    with pytest.raises(anthropic.BadRequestError, match="nope"):
        claude.messages.create(
            model=MODEL, max_tokens=100, messages=user("hi"), tools=[WEATHER],
            tool_choice={"type": "tool", "name": "nope"},
        )  # fmt: skip
    with pytest.raises(anthropic.BadRequestError, match="input_schema"):
        claude.messages.create(model=MODEL, max_tokens=100, messages=user("hi"), tools=[{"name": "x"}])


def test_parallel_tool_calls_streamed(claude: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 100, "tools": [WEATHER, TIME]}
    plain = claude.messages.create(messages=user("do these in parallel"), **kwargs)
    with claude.messages.stream(messages=user("do these in parallel"), **kwargs) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert [b.name for b in final.content] == ["get_weather", "get_time"] and final.stop_reason == "tool_use"
    assert [b.input for b in final.content] == [b.input for b in plain.content]
    assert (
        final.usage.output_tokens
        == plain.usage.output_tokens
        == sum(1 + len(json.dumps(b.input).split()) for b in plain.content)
    )
    assert "input_json" in kinds
    single = claude.messages.create(
        messages=user("do these in parallel"),
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        **kwargs,
    )
    assert len(single.content) == 1


# ---------------------------------------------------------------- inputs, limits, counting, caching


def test_images_stop_sequences_and_max_tokens(claude: anthropic.Anthropic, url: str, http: httpx.Client) -> None:
    url_image = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    msg = [{"role": "user", "content": [{"type": "text", "text": "what is this"}, IMAGE, url_image]}]
    r = claude.messages.create(model=MODEL, max_tokens=100, messages=msg)
    assert r.usage.input_tokens == 3 + 2 * 85
    assert r.content[0].text.startswith(f"Hello from {MODEL}. You said: what is this")
    with pytest.raises(anthropic.BadRequestError, match="source"):
        bad = [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]
        claude.messages.create(model=MODEL, max_tokens=100, messages=bad)
    s = claude.messages.create(model=MODEL, max_tokens=100, messages=user("hi"), stop_sequences=["nope", "You said"])
    assert s.content[0].text == f"Hello from {MODEL}." and s.stop_reason == "stop_sequence"
    assert s.stop_sequence == "You said" and s.usage.output_tokens == 3
    body = {"model": MODEL, "max_tokens": 100, "messages": user("hi"), "stop_sequences": ["You said"], "stream": True}
    last = events(http.post(f"{url}/v1/messages", json=body, headers=KEY).text)[-2][1]
    assert last["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "You said"}
    short = claude.messages.create(model=MODEL, max_tokens=5, messages=user("hi"))
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 5
    assert short.content[0].text == f"Hello from {MODEL}. You said:"
    r = http.post(f"{url}/v1/messages", json={"model": MODEL, "messages": user("hi")}, headers=KEY)
    assert r.status_code == 400 and r.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


def test_count_tokens_matches_messages(claude: anthropic.Anthropic) -> None:
    msg = [{"role": "user", "content": [{"type": "text", "text": "what is this"}, IMAGE]}]
    kwargs: dict[str, Any] = {"model": MODEL, "system": "be brief", "messages": msg, "tools": [WEATHER]}
    counted = claude.messages.count_tokens(**kwargs)
    r = claude.messages.create(max_tokens=100, **kwargs)
    assert counted.input_tokens == r.usage.input_tokens == 2 + 3 + 85 + len(json.dumps(WEATHER).split())


def test_prompt_caching(claude: anthropic.Anthropic, billing_for: Billing) -> None:
    long = f"cache-{uuid.uuid4().hex} " + " ".join(["rule"] * 299)  # 300 words
    system = [{"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "x y"}]
    first = claude.messages.create(model=MODEL, max_tokens=50, system=system, messages=user("hi"))
    u = first.usage
    assert (u.cache_creation_input_tokens, u.cache_read_input_tokens, u.input_tokens) == (300, 0, 3)
    assert u.cache_creation.ephemeral_5m_input_tokens == 300
    raw = claude.messages.with_raw_response.create(model=MODEL, max_tokens=50, system=system, messages=user("ho"))
    u = raw.parse().usage
    assert (u.cache_creation_input_tokens, u.cache_read_input_tokens, u.input_tokens) == (0, 300, 3)
    bill = billing_for(raw.headers["request-id"])  # gateway convention: input_tokens is the whole prompt
    assert (bill.input_tokens, bill.cached_input_tokens, bill.cache_write_input_tokens) == (303, 300, 0)
    assert claude.messages.count_tokens(model=MODEL, system=system, messages=user("hi")).input_tokens == 303
    with claude.messages.stream(model=MODEL, max_tokens=50, system=system, messages=user("hi")) as stream:
        assert stream.get_final_message().usage.cache_read_input_tokens == 300
    # top-level cache_control (automatic caching): the breakpoint moves forward, the old prefix is read
    convo: list[Any] = user(long)
    turn1 = claude.messages.create(model=MODEL, max_tokens=5, messages=convo, cache_control={"type": "ephemeral"})
    assert (turn1.usage.cache_creation_input_tokens, turn1.usage.input_tokens) == (300, 0)
    convo += [{"role": "assistant", "content": turn1.content[0].text}, *user("and then")]
    turn2 = claude.messages.create(model=MODEL, max_tokens=5, messages=convo, cache_control={"type": "ephemeral"})
    u = turn2.usage
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens, u.input_tokens) == (300, 5 + 2, 0)
    plain = [{"type": "text", "text": long}]
    u = claude.messages.create(model=MODEL, max_tokens=50, system=plain, messages=user("hi")).usage
    assert (u.cache_read_input_tokens, u.input_tokens) == (0, 301)  # no cache_control, no caching


# ---------------------------------------------------------------- faults


def test_error_faults(claude: anthropic.Anthropic, billed: Callable[[str], bool]) -> None:
    with pytest.raises(anthropic.RateLimitError) as rl:
        claude.messages.create(model=f"{MODEL}-fault-429", max_tokens=10, messages=user("hi"))
    err = rl.value
    assert err.response.headers["retry-after"] == "1" and err.type == "rate_limit_error"
    assert err.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert err.body == {"type": "error", "error": {"type": "rate_limit_error", "message": err.api_message},
                        "request_id": err.request_id}  # fmt: skip
    assert err.request_id.startswith("req_") and not billed(err.request_id)
    with pytest.raises(anthropic.RateLimitError) as rl:
        claude.messages.create(model=f"{MODEL}-fault-429-no-retry-after", max_tokens=10, messages=user("hi"))
    assert "retry-after" not in rl.value.response.headers
    with pytest.raises(anthropic.BadRequestError, match="credit balance is too low") as quota:
        claude.messages.create(
            model=MODEL, max_tokens=10, messages=user("hi"), extra_headers={"x-emulator-fault": "quota"}
        )
    assert quota.value.type == "invalid_request_error"
    with pytest.raises(anthropic.AuthenticationError) as auth:
        claude.messages.create(model=f"{MODEL}-fault-401", max_tokens=10, messages=user("hi"))
    assert auth.value.type == "authentication_error"
    for _ in range(2):  # persistent
        with pytest.raises(anthropic.OverloadedError) as busy:
            claude.messages.create(model=f"{MODEL}-fault-503", max_tokens=10, messages=user("hi"))
        assert busy.value.status_code == 529 and busy.value.type == "overloaded_error"
        assert isinstance(busy.value, anthropic.InternalServerError)
    with pytest.raises(anthropic.BadRequestError) as ctx:
        claude.messages.create(model=f"{MODEL}-fault-context-length", max_tokens=10, messages=user("hi"))
    assert ctx.value.api_message == "prompt is too long: 128001 tokens > 128000 maximum"
    messages = user(f"once {uuid.uuid4().hex}")
    with pytest.raises(anthropic.InternalServerError) as once:
        claude.messages.create(model=f"{MODEL}-fault-500-once", max_tokens=10, messages=messages)
    assert once.value.status_code == 500 and once.value.type == "api_error"
    ok = claude.messages.create(model=f"{MODEL}-fault-500-once", max_tokens=10, messages=messages)
    assert ok.stop_reason == "max_tokens"


def test_real_context_window_check() -> None:
    em = Emulator(EmulatorSettings(context_window=10))
    base = em.start_in_thread()
    try:
        c = anthropic.Anthropic(api_key="k", base_url=f"{base}/anthropic", max_retries=0)
        assert c.messages.create(model=MODEL, max_tokens=5, messages=user("one two three")).usage.input_tokens == 3
        with pytest.raises(anthropic.BadRequestError) as err:
            c.messages.create(model=MODEL, max_tokens=5, messages=user(" ".join(["w"] * 11)))
        assert err.value.api_message == "prompt is too long: 11 tokens > 10 maximum"
        assert [b.outcome for b in em.recorder.billing] == ["ok"]
    finally:
        em.stop_thread()


def test_transport_faults(claude: anthropic.Anthropic, emulator: Emulator, billed: Callable[[str], bool]) -> None:
    marker = uuid.uuid4().hex
    with pytest.raises(anthropic.APIConnectionError):
        claude.messages.create(model=f"{MODEL}-fault-reset", max_tokens=10, messages=user(marker))
    assert not billed(_marked(emulator, marker))
    quick = claude.with_options(timeout=0.5)
    marker = uuid.uuid4().hex
    t0 = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        quick.messages.create(model=f"{MODEL}-fault-hang", max_tokens=10, messages=user(marker))
    assert time.monotonic() - t0 < 3 and not billed(_marked(emulator, marker))
    with pytest.raises(anthropic.APIConnectionError):
        claude.messages.create(model=f"{MODEL}-fault-cut", max_tokens=100, messages=user("hi"))


def test_cut_stream_errors_mid_stream_and_bills_what_was_sent(
    claude: anthropic.Anthropic, billing_for: Billing
) -> None:
    received: list[str] = []
    with pytest.raises(httpx2.RemoteProtocolError):  # PROTOCOLS §6: the SDK leaks it unwrapped
        with claude.messages.stream(model=f"{MODEL}-fault-cut", max_tokens=100, messages=user("hi")) as stream:
            rid = stream.response.headers["request-id"]
            received.extend(stream.text_stream)
    bill = billing_for(rid)
    assert bill.outcome == "cut" and bill.stream and bill.input_tokens == 1
    assert bill.output_tokens == len("".join(received).split()) and received  # tokens are words here


def test_stall_malformed_and_no_done_streams(
    claude: anthropic.Anthropic, url: str, http: httpx.Client, billing_for: Billing
) -> None:
    quick = claude.with_options(timeout=0.5)
    got: list[str] = []
    with pytest.raises(httpx2.ReadTimeout):  # mid-stream: not wrapped into APITimeoutError either
        with quick.messages.stream(model=f"{MODEL}-fault-stall", max_tokens=100, messages=user("hi")) as stream:
            rid = stream.response.headers["request-id"]
            got.extend(stream.text_stream)
    bill = billing_for(rid)
    assert bill.outcome == "stall" and len(got) == 3 and bill.output_tokens == len("".join(got).split()) == 9
    with pytest.raises(json.JSONDecodeError):
        list(claude.messages.create(model=f"{MODEL}-fault-malformed", max_tokens=100, messages=user("hi"), stream=True))
    raw = list(claude.messages.create(model=f"{MODEL}-fault-no-done", max_tokens=100, messages=user("hi"), stream=True))
    assert raw[0].type == "message_start" and raw[-1].type == "content_block_delta" and len(raw) == 2 + 8
    with claude.messages.stream(model=f"{MODEL}-fault-no-done", max_tokens=100, messages=user("hi")) as stream:
        final = stream.get_final_message()  # returns silently ...
    assert final.stop_reason is None and len(final.content[0].text.split()) == 24  # ... without a stop reason
    body = {"model": f"{MODEL}-fault-no-done", "max_tokens": 100, "messages": user("hi"), "stream": True}
    names = [n for n, _ in events(http.post(f"{url}/v1/messages", json=body, headers=KEY).text)]
    assert "message_stop" not in names and "message_delta" not in names


def test_overloaded_midstream(claude: anthropic.Anthropic, billing_for: Billing, billed: Callable[[str], bool]) -> None:
    got: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as err:
        with claude.messages.stream(
            model=f"{MODEL}-fault-overloaded-midstream", max_tokens=100, messages=user("hi")
        ) as stream:
            rid = stream.response.headers["request-id"]
            got.extend(stream.text_stream)
    assert err.value.status_code == 200 and err.value.type == "overloaded_error"
    assert not isinstance(err.value, anthropic.OverloadedError)  # classify by .type, not by class
    assert err.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert len(got) == 3
    bill = billing_for(rid)
    assert bill.outcome == "overloaded-midstream" and bill.output_tokens == len("".join(got).split())
    with pytest.raises(anthropic.OverloadedError) as plain:  # no stream: a plain 529
        claude.messages.create(
            model=MODEL, max_tokens=100, messages=user("hi"),
            extra_headers={"x-emulator-fault": "overloaded-midstream"},
        )  # fmt: skip
    assert not billed(plain.value.request_id)


def test_refusal(claude: anthropic.Anthropic, billing_for: Billing) -> None:
    raw = claude.messages.with_raw_response.create(
        model=f"{MODEL}-fault-content-filter", max_tokens=100, messages=user("hi")
    )
    m = raw.parse()
    assert m.stop_reason == "refusal" and m.usage.output_tokens == 12 == len(m.content[0].text.split())
    assert m.stop_details is not None and m.stop_details.type == "refusal"
    bill = billing_for(raw.headers["request-id"])
    assert bill.outcome == "refusal" and bill.output_tokens == 12
    with claude.messages.stream(model=f"{MODEL}-fault-content-filter", max_tokens=100, messages=user("hi")) as s:
        final = s.get_final_message()
    assert final.stop_reason == "refusal" and blocks(final.content) == blocks(m.content)


def test_client_disconnect_bills_what_was_sent(claude: anthropic.Anthropic, billing_for: Billing) -> None:
    slow = {"x-emulator-inter-token-ms": "20"}
    with claude.messages.stream(model=MODEL, max_tokens=100, messages=user("hi"), extra_headers=slow) as stream:
        rid = stream.response.headers["request-id"]
        for i, _ in enumerate(stream.text_stream):
            if i == 2:
                break
    bill = billing_for(rid)
    assert bill.outcome == "disconnected" and 3 <= bill.output_tokens < 24


def test_slow_first_token(claude: anthropic.Anthropic) -> None:
    t0 = time.monotonic()
    claude.messages.create(
        model=f"{MODEL}-fault-slow-first-token", max_tokens=10, messages=user("hi"),
        extra_headers={"x-emulator-slow-ms": "200"},
    )  # fmt: skip
    assert time.monotonic() - t0 >= 0.19


# ---------------------------------------------------------------- wire validation


def test_auth_validation_and_not_found(url: str, http: httpx.Client, claude: anthropic.Anthropic) -> None:
    msgs = f"{url}/v1/messages"
    body = {"model": MODEL, "max_tokens": 10, "messages": user("hi")}
    r = http.post(msgs, json=body)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert r.json()["request_id"] == r.headers["request-id"]
    assert http.post(msgs, json=body, headers={"authorization": "Bearer k"}).status_code == 200
    assert http.post(msgs, json=body, headers={**KEY, "anthropic-version": "1999-01-01"}).status_code == 200
    r = http.post(msgs, content=b"{nope", headers=KEY)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = http.post(msgs, json={**body, "messages": [{"role": "system", "content": "x"}, *user("hi")]}, headers=KEY)
    assert r.status_code == 400 and "top-level `system`" in r.json()["error"]["message"]
    r = http.post(msgs, json={**body, "model": f"{MODEL}-fault-bogus"}, headers=KEY)
    assert r.status_code == 400 and "bogus" in r.json()["error"]["message"]
    r = http.post(msgs, json={**body, "max_tokens": 0}, headers=KEY)
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    r = http.get(f"{url}/v1/nope", headers=KEY)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error" and r.headers["request-id"]
    assert MODEL in [m.id for m in claude.models.list()]


def test_only_the_configured_api_keys_are_accepted(
    url: str, http: httpx.Client, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulator.settings, "api_keys", ("sk-current",))
    msgs, body = f"{url}/v1/messages", {"model": MODEL, "max_tokens": 10, "messages": user("hi")}
    r = http.post(msgs, json=body, headers={"x-api-key": "sk-rotated-away"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "invalid x-api-key"
    assert http.post(msgs, json=body, headers={"x-api-key": "sk-current"}).status_code == 200
    assert http.post(msgs, json=body, headers={"authorization": "Bearer sk-current"}).status_code == 200
