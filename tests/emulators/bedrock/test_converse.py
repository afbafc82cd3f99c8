"""Bedrock Converse / ConverseStream on the emulator: answers, event-stream frames, tools, cache, guardrails."""

from __future__ import annotations

import json
import socket
import struct
import uuid
import zlib
from collections.abc import Callable

import httpx
import openai
import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError

from gateway.emulators import Emulator
from gateway.emulators.text import IMAGE_TOKENS
from tests.emulators.bedrock.support import (
    CLAUDE,
    PNG,
    SIGV4,
    TIME,
    WEATHER,
    Client,
    assert_billed_as_reported,
    collect,
    msgs,
    reassemble,
    rid,
    text_of,
)
from tests.emulators.wire_data import Billing


def test_converse_matches_openai_answer_usage_billing_and_region(
    make_client: Callable[..., Client], client: openai.OpenAI, emulator: Emulator, billing_for: Billing
) -> None:
    paris = make_client(region="eu-west-3")
    r = paris.converse(
        modelId=CLAUDE,
        system=[{"text": "be brief"}],
        messages=msgs("hi there"),
        inferenceConfig={"temperature": 0.2, "topP": 0.9},
        additionalModelRequestFields={"top_k": 5},
    )
    oa = client.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "hi there"}])
    assert text_of(r) == oa.choices[0].message.content and text_of(r).startswith(f"Hello from {CLAUDE}. You said: hi")
    assert r["output"]["message"]["role"] == "assistant" and r["stopReason"] == "end_turn"
    assert r["usage"] == {"inputTokens": 4, "outputTokens": 24, "totalTokens": 28}
    assert isinstance(r["metrics"]["latencyMs"], int)
    bill = billing_for(rid(r))
    assert (bill.provider, bill.model, bill.endpoint, bill.stream, bill.outcome) == (
        "bedrock",
        CLAUDE,
        "converse",
        False,
        "ok",
    )
    assert_billed_as_reported(bill, r["usage"])
    (record,) = [x for x in list(emulator.recorder.requests) if x.request_id == rid(r)]
    assert record.region == "eu-west-3" and record.model_id == CLAUDE and record.provider == "bedrock"
    assert record.path.endswith("/converse") and record.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")
    assert record.body["additionalModelRequestFields"] == {"top_k": 5}
    assert brt_region(emulator, make_client()) == "us-east-1"


def brt_region(emulator: Emulator, c: Client) -> str | None:
    r = c.converse(modelId=CLAUDE, messages=msgs("region"))
    return next(x.region for x in list(emulator.recorder.requests) if x.request_id == rid(r))


@pytest.mark.parametrize(
    "model",
    [
        "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
        "meta.llama3-1-8b-instruct-v1:0",
        "mistral.mistral-large-2402-v1:0",
    ],
)
def test_model_families(brt: Client, model: str) -> None:
    r = brt.converse(modelId=model, messages=msgs("hello"))
    assert text_of(r).startswith(f"Hello from {model}. You said: hello") and r["stopReason"] == "end_turn"


def test_stream_reassembles_to_converse(brt: Client, billing_for: Billing) -> None:
    plain = brt.converse(modelId=CLAUDE, messages=msgs("tell me a story please"))
    s = brt.converse_stream(modelId=CLAUDE, messages=msgs("tell me a story please"))
    assert s["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/vnd.amazon.eventstream"
    events = collect(s)
    kinds = [next(iter(e)) for e in events]
    assert kinds == ["messageStart", *["contentBlockDelta"] * 8, "contentBlockStop", "messageStop", "metadata"]
    assert events[0]["messageStart"] == {"role": "assistant"}
    assert reassemble(events)[0] == text_of(plain)
    assert events[-2]["messageStop"] == {"stopReason": "end_turn"}
    assert events[-1]["metadata"]["usage"] == plain["usage"] and "latencyMs" in events[-1]["metadata"]["metrics"]
    bill = billing_for(rid(s))
    assert bill.stream and bill.outcome == "ok" and bill.endpoint == "converse-stream"
    assert_billed_as_reported(bill, plain["usage"])


def test_stream_frames_on_the_wire(url: str, http: httpx.Client) -> None:
    body = {"messages": msgs("wire check")}
    headers = {"authorization": SIGV4}
    with http.stream(
        "POST", f"{url}/model/{CLAUDE.replace(':', '%3A')}/converse-stream", json=body, headers=headers
    ) as r:
        assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
        assert r.headers["content-type"] == "application/vnd.amazon.eventstream" and r.headers["x-amzn-requestid"]
        raw = b"".join(r.iter_raw())
    # the first frame by hand: prelude CRC over 8 bytes, message CRC over everything before it
    total, hlen, prelude_crc = struct.unpack("!III", raw[:12])
    assert prelude_crc == zlib.crc32(raw[:8]) and struct.unpack("!I", raw[total - 4 : total])[0] == zlib.crc32(
        raw[: total - 4]
    )
    buf = EventStreamBuffer()
    buf.add_data(raw)
    messages = list(buf)  # verifies every CRC
    assert len(messages) == 12
    first = messages[0]
    assert first.headers == {
        ":event-type": "messageStart",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(first.payload) == {"role": "assistant"} and hlen == len(raw[12 : 12 + hlen])
    assert [m.headers[":event-type"] for m in messages[-3:]] == ["contentBlockStop", "messageStop", "metadata"]
    delta = json.loads(messages[1].payload)
    assert delta == {"contentBlockIndex": 0, "delta": {"text": f"Hello from {CLAUDE}."}}  # three tokens


def test_one_frame_per_http_chunk(emulator: Emulator) -> None:
    host, port = emulator.base_url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({"messages": msgs("chunks")}).encode()
    head = (
        f"POST /bedrock/model/{CLAUDE}/converse-stream HTTP/1.1\r\nHost: {host}\r\nAuthorization: {SIGV4}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head.encode() + body)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    rest = raw.split(b"\r\n\r\n", 1)[1]
    frames: list[bytes] = []
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            break
        frames.append(rest[:size])
        rest = rest[size + 2 :]
    assert len(frames) == 12
    for data in frames:  # every HTTP chunk is exactly one complete event-stream message
        assert struct.unpack("!I", data[:4])[0] == len(data)
        assert struct.unpack("!I", data[-4:])[0] == zlib.crc32(data[:-4])


def test_tool_use_round_trip(brt: Client, billing_for: Billing) -> None:
    tools = {"tools": [WEATHER], "toolChoice": {"auto": {}}}
    first = brt.converse(modelId=CLAUDE, messages=msgs("weather in paris?"), toolConfig=tools)
    assert first["stopReason"] == "tool_use"
    (block,) = first["output"]["message"]["content"]
    use = block["toolUse"]
    assert use["name"] == "get_weather" and use["toolUseId"].startswith("tooluse_")
    assert use["input"] == {"city": "example", "days": 1}
    assert_billed_as_reported(billing_for(rid(first)), first["usage"])
    s = collect(brt.converse_stream(modelId=CLAUDE, messages=msgs("weather in paris?"), toolConfig=tools))
    _, streamed = reassemble(s)
    assert json.loads(streamed[0]["input"]) == use["input"] and streamed[0]["name"] == "get_weather"
    assert s[-2]["messageStop"]["stopReason"] == "tool_use" and s[-1]["metadata"]["usage"] == first["usage"]
    history = [
        *msgs("weather in paris?"),
        first["output"]["message"],
        {
            "role": "user",
            "content": [
                {
                    "toolResult": {
                        "toolUseId": use["toolUseId"],
                        "content": [{"json": {"temp": 21}}, {"text": "sunny"}],
                        "status": "success",
                    }
                }
            ],
        },
    ]
    second = brt.converse(modelId=CLAUDE, messages=history, toolConfig=tools)
    assert second["stopReason"] == "end_turn"
    assert text_of(second).startswith(f'Hello from {CLAUDE}. The tools returned: {{"temp": 21}} sunny')
    assert second["usage"]["inputTokens"] > first["usage"]["inputTokens"]


def test_parallel_and_forced_tool_choice(brt: Client) -> None:
    both = brt.converse(modelId=CLAUDE, messages=msgs("do these in parallel"), toolConfig={"tools": [WEATHER, TIME]})
    assert [b["toolUse"]["name"] for b in both["output"]["message"]["content"]] == ["get_weather", "get_time"]
    ids = {b["toolUse"]["toolUseId"] for b in both["output"]["message"]["content"]}
    assert len(ids) == 2
    s = collect(
        brt.converse_stream(modelId=CLAUDE, messages=msgs("in parallel"), toolConfig={"tools": [WEATHER, TIME]})
    )
    _, tools = reassemble(s)
    assert [t["name"] for t in tools.values()] == ["get_weather", "get_time"]
    assert [e["contentBlockStop"]["contentBlockIndex"] for e in s if "contentBlockStop" in e] == [0, 1]
    named = brt.converse(
        modelId=CLAUDE,
        messages=msgs("hi"),
        toolConfig={"tools": [WEATHER, TIME], "toolChoice": {"tool": {"name": "get_time"}}},
    )
    assert [b["toolUse"]["name"] for b in named["output"]["message"]["content"]] == ["get_time"]
    anyone = brt.converse(
        modelId=CLAUDE, messages=msgs("hi"), toolConfig={"tools": [WEATHER, TIME], "toolChoice": {"any": {}}}
    )
    assert [b["toolUse"]["name"] for b in anyone["output"]["message"]["content"]] == ["get_weather"]
    with pytest.raises(ClientError) as err:
        brt.converse(
            modelId=CLAUDE,
            messages=msgs("hi"),
            toolConfig={"tools": [WEATHER], "toolChoice": {"tool": {"name": "nope"}}},
        )
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_image_is_counted(brt: Client) -> None:
    plain = brt.converse(modelId=CLAUDE, messages=msgs("describe this"))
    with_image = brt.converse(
        modelId=CLAUDE,
        messages=[
            {
                "role": "user",
                "content": [{"text": "describe this"}, {"image": {"format": "png", "source": {"bytes": PNG}}}],
            }
        ],
    )
    assert with_image["usage"]["inputTokens"] == plain["usage"]["inputTokens"] + IMAGE_TOKENS
    assert text_of(with_image) == text_of(plain)


def test_max_tokens_and_stop_sequence(brt: Client, billing_for: Billing) -> None:
    r = brt.converse(modelId=CLAUDE, messages=msgs("hi"), inferenceConfig={"maxTokens": 5})
    assert r["stopReason"] == "max_tokens" and r["usage"]["outputTokens"] == 5 == len(text_of(r).split())
    assert billing_for(rid(r)).output_tokens == 5
    r = brt.converse(modelId=CLAUDE, messages=msgs("hi"), inferenceConfig={"stopSequences": ["said:"]})
    assert r["stopReason"] == "stop_sequence" and text_of(r) == f"Hello from {CLAUDE}. You"
    assert r["usage"]["outputTokens"] == 4
    s = collect(brt.converse_stream(modelId=CLAUDE, messages=msgs("hi"), inferenceConfig={"stopSequences": ["said:"]}))
    assert reassemble(s)[0] == text_of(r) and s[-2]["messageStop"]["stopReason"] == "stop_sequence"
    r = brt.converse(modelId=CLAUDE, messages=msgs("hi"), inferenceConfig={"stopSequences": ["zzz"], "maxTokens": 100})
    assert r["stopReason"] == "end_turn" and r["usage"]["outputTokens"] == 24


def test_cache_point_writes_then_reads(brt: Client, billing_for: Billing) -> None:
    system = [
        {"text": f"policy {uuid.uuid4().hex} " + "rule " * 50},
        {"cachePoint": {"type": "default"}},
        {"text": "tail"},
    ]
    first = brt.converse(modelId=CLAUDE, system=system, messages=msgs("hi"))
    assert first["usage"] == {
        "inputTokens": 2,  # "tail" + "hi": the cached prefix is not in inputTokens
        "outputTokens": 24,
        "totalTokens": 2 + 52 + 24,
        "cacheReadInputTokens": 0,
        "cacheWriteInputTokens": 52,
    }
    assert_billed_as_reported(billing_for(rid(first)), first["usage"])
    second = collect(brt.converse_stream(modelId=CLAUDE, system=system, messages=msgs("hi")))[-1]["metadata"]["usage"]
    assert (second["cacheReadInputTokens"], second["cacheWriteInputTokens"], second["inputTokens"]) == (52, 0, 2)
    other = brt.converse(modelId="meta.llama3-1-8b-instruct-v1:0", system=system, messages=msgs("hi"))
    assert other["usage"]["cacheWriteInputTokens"] == 52  # the cache is per model
    plain = brt.converse(modelId=CLAUDE, system=[{"text": "no cache point"}], messages=msgs("hi"))
    assert "cacheReadInputTokens" not in plain["usage"]


def test_guardrail_and_content_filter(brt: Client, billing_for: Billing) -> None:
    guard = {"guardrailIdentifier": "gr-1", "guardrailVersion": "1", "trace": "enabled"}
    r = brt.converse(modelId=f"{CLAUDE}-fault-guardrail", messages=msgs("bad things"), guardrailConfig=guard)
    assert r["stopReason"] == "guardrail_intervened" and text_of(r) == "Sorry, the model cannot answer this question."
    assessment = r["trace"]["guardrail"]["inputAssessment"]["gr-1"]["contentPolicy"]["filters"][0]
    assert assessment["action"] == "BLOCKED" and r["usage"]["outputTokens"] == 0
    bill = billing_for(rid(r))
    assert bill.outcome == "guardrail" and bill.output_tokens == 0 and bill.input_tokens == 2
    s = collect(
        brt.converse_stream(
            modelId=f"{CLAUDE}-fault-guardrail",
            messages=msgs("bad things"),
            guardrailConfig={**guard, "streamProcessingMode": "sync"},
        )
    )
    assert s[-2]["messageStop"]["stopReason"] == "guardrail_intervened" and "guardrail" in s[-1]["metadata"]["trace"]
    untraced = brt.converse(
        modelId=f"{CLAUDE}-fault-guardrail", messages=msgs("x"), guardrailConfig={**guard, "trace": "disabled"}
    )
    assert untraced["stopReason"] == "guardrail_intervened" and "trace" not in untraced
    passthrough = brt.converse(modelId=CLAUDE, messages=msgs("fine"), guardrailConfig=guard)
    assert passthrough["stopReason"] == "end_turn"
    r = brt.converse(modelId=f"{CLAUDE}-fault-content-filter", messages=msgs("hi"))
    assert r["stopReason"] == "content_filtered" and r["usage"]["outputTokens"] == 12
    assert billing_for(rid(r)).outcome == "content_filter"
    s = collect(brt.converse_stream(modelId=f"{CLAUDE}-fault-content-filter", messages=msgs("hi")))
    assert s[-2]["messageStop"]["stopReason"] == "content_filtered"


def test_request_validation(brt: Client, url: str, http: httpx.Client) -> None:
    with pytest.raises(ClientError) as err:
        brt.converse(modelId=CLAUDE, messages=[{"role": "assistant", "content": [{"text": "hi"}]}])
    assert err.value.response["Error"]["Code"] == "ValidationException"
    tool_result = {"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": [{"text": "x"}]}}]}
    with pytest.raises(ClientError) as err:
        brt.converse(modelId=CLAUDE, messages=[tool_result])
    assert "toolConfig" in err.value.response["Error"]["Message"]
    r = http.post(
        f"{url}/model/{CLAUDE}/converse",
        json={"messages": msgs("hi"), "inferenceConfig": {"maxTokens": 0}},
        headers={"authorization": SIGV4},
    )
    assert (
        r.status_code == 400
        and r.headers["x-amzn-errortype"] == "ValidationException"
        and "maxTokens" in r.json()["message"]
    )


# ---------------------------------------------------------------- embeddings and count-tokens


def test_model_families_refuse_what_bedrock_refuses(brt: Client) -> None:
    tools = {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]}
    cases = [
        ("mistral.mistral-7b-instruct-v0:2", {"system": [{"text": "be brief"}]}, False, "system messages"),
        ("mistral.mistral-7b-instruct-v0:2", {"toolConfig": tools}, False, "doesn't support tool use."),
        ("meta.llama3-1-8b-instruct-v1:0", {"toolConfig": tools}, True, "tool use in streaming mode"),
        ("meta.llama3-1-8b-instruct-v1:0", {"toolConfig": {**tools, "toolChoice": {"any": {}}}}, False,
         "toolConfig.toolChoice.any"),
    ]  # fmt: skip
    for model, extra, stream, words in cases:
        call = brt.converse_stream if stream else brt.converse
        with pytest.raises(ClientError) as err:
            call(modelId=model, messages=msgs("hi"), **extra)
        assert err.value.response["Error"]["Code"] == "ValidationException" and words in str(err.value), model
    llama = brt.converse(modelId="meta.llama3-1-8b-instruct-v1:0", messages=msgs("hi"), toolConfig=tools)
    assert llama["stopReason"] == "tool_use"  # Llama 3.1 takes tools when not streaming
    claude = brt.converse_stream(modelId=CLAUDE, messages=msgs("hi"), system=[{"text": "be brief"}], toolConfig=tools)
    assert collect(claude)[-2]["messageStop"]["stopReason"] == "tool_use"
