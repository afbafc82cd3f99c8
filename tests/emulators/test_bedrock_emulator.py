"""The Bedrock runtime emulator driven by boto3 `bedrock-runtime` (sync) and by raw httpx for the wire."""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import httpx
import openai
import pytest
import urllib3
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from botocore.exceptions import ClientError, ConnectionClosedError, EventStreamError, ReadTimeoutError

from gateway.emulators import Emulator
from gateway.emulators.text import IMAGE_TOKENS
from tests.emulators.wire_data import Billing

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
SIGV4 = "AWS4-HMAC-SHA256 Credential=test/20260101/ap-south-1/bedrock/aws4_request, SignedHeaders=host, Signature=ab"
WEATHER = {
    "toolSpec": {
        "name": "get_weather",
        "description": "w",
        "inputSchema": {
            "json": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
            }
        },
    }
}
TIME = {"toolSpec": {"name": "get_time", "inputSchema": {"json": {"type": "object", "properties": {}}}}}

Client = Any  # botocore's generated BedrockRuntime client


def msgs(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def rid(response: dict[str, Any]) -> str:
    return response["ResponseMetadata"]["RequestId"]


def text_of(response: dict[str, Any]) -> str:
    return "".join(b.get("text", "") for b in response["output"]["message"]["content"])


@pytest.fixture(scope="module")
def make_client(emulator: Emulator) -> Iterator[Callable[..., Client]]:
    os.environ.pop("AWS_BEARER_TOKEN_BEDROCK", None)  # else botocore refuses a plain-HTTP endpoint
    made: dict[tuple[str, float], Client] = {}

    def make(region: str = "us-east-1", read_timeout: float = 5.0) -> Client:
        key = (region, read_timeout)
        if key not in made:
            made[key] = boto3.client(
                "bedrock-runtime",
                endpoint_url=f"{emulator.base_url}/bedrock",
                region_name=region,
                aws_access_key_id="test",
                aws_secret_access_key="test",
                config=Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout, connect_timeout=2),
            )
        return made[key]

    yield make
    for c in made.values():
        c.close()


@pytest.fixture(scope="module")
def brt(make_client: Callable[..., Client]) -> Client:
    return make_client()


@pytest.fixture(scope="module")
def quick(make_client: Callable[..., Client]) -> Client:
    return make_client(read_timeout=0.5)


@pytest.fixture(scope="module")
def url(emulator: Emulator) -> str:
    return f"{emulator.base_url}/bedrock"


def collect(stream_response: dict[str, Any]) -> list[dict[str, Any]]:
    return list(stream_response["stream"])


def reassemble(events: list[dict[str, Any]]) -> tuple[str, dict[int, dict[str, Any]]]:
    """(text, {block index: {"toolUseId", "name", "input" (json string)}}) from ConverseStream events."""
    text, tools = "", {}
    for e in events:
        if "contentBlockStart" in e:
            start = e["contentBlockStart"]
            tools[start["contentBlockIndex"]] = {**start["start"]["toolUse"], "input": ""}
        elif "contentBlockDelta" in e:
            delta = e["contentBlockDelta"]["delta"]
            if "text" in delta:
                text += delta["text"]
            else:
                tools[e["contentBlockDelta"]["contentBlockIndex"]]["input"] += delta["toolUse"]["input"]
    return text, tools


def assert_billed_as_reported(bill: Any, usage: dict[str, int]) -> None:
    prompt = usage["inputTokens"] + usage.get("cacheReadInputTokens", 0) + usage.get("cacheWriteInputTokens", 0)
    assert (bill.input_tokens, bill.output_tokens) == (prompt, usage["outputTokens"])
    assert bill.cached_input_tokens == usage.get("cacheReadInputTokens", 0)
    assert bill.cache_write_input_tokens == usage.get("cacheWriteInputTokens", 0)
    assert usage["totalTokens"] == prompt + usage["outputTokens"]


# ---------------------------------------------------------------- converse


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
    assert kinds == ["messageStart", *["contentBlockDelta"] * 24, "contentBlockStop", "messageStop", "metadata"]
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
    assert len(messages) == 28
    first = messages[0]
    assert first.headers == {
        ":event-type": "messageStart",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(first.payload) == {"role": "assistant"} and hlen == len(raw[12 : 12 + hlen])
    assert [m.headers[":event-type"] for m in messages[-3:]] == ["contentBlockStop", "messageStop", "metadata"]
    delta = json.loads(messages[1].payload)
    assert delta == {"contentBlockIndex": 0, "delta": {"text": "Hello"}}


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
    assert len(frames) == 28
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


def invoke(c: Client, model: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    r = c.invoke_model(modelId=model, body=json.dumps(body), contentType="application/json", accept="application/json")
    return json.loads(r["body"].read()), r


def test_titan_embeddings(brt: Client, billing_for: Billing) -> None:
    data, r = invoke(brt, TITAN, {"inputText": "hello embedding world", "dimensions": 256, "normalize": True})
    assert set(data) == {"embedding", "inputTextTokenCount", "embeddingsByType"}
    assert len(data["embedding"]) == 256 and math.isclose(math.fsum(v * v for v in data["embedding"]), 1.0)
    assert data["embeddingsByType"] == {"float": data["embedding"]} and data["inputTextTokenCount"] == 3
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "3"
    assert r["contentType"] == "application/json"
    bill = billing_for(rid(r))
    assert (bill.endpoint, bill.input_tokens, bill.output_tokens, bill.model) == ("invoke", 3, 0, TITAN)
    again, _ = invoke(brt, TITAN, {"inputText": "hello embedding world", "dimensions": 256})
    assert again["embedding"] == data["embedding"]
    default, _ = invoke(brt, TITAN, {"inputText": "x", "normalize": False, "embeddingTypes": ["float", "binary"]})
    assert len(default["embedding"]) == 1024 and math.fsum(v * v for v in default["embedding"]) > 1.0
    assert set(default["embeddingsByType"]["binary"]) <= {0, 1}
    with pytest.raises(ClientError) as err:
        invoke(brt, TITAN, {"inputText": "x", "dimensions": 300})
    assert (
        err.value.response["Error"]["Code"] == "ValidationException" and "300" in err.value.response["Error"]["Message"]
    )
    with pytest.raises(ClientError) as err:
        invoke(brt, TITAN, {"texts": ["wrong shape"]})
    assert "inputText" in err.value.response["Error"]["Message"]


def test_cohere_embeddings(brt: Client) -> None:
    data, r = invoke(brt, COHERE, {"texts": ["one", "two words"], "input_type": "search_document"})
    assert data["response_type"] == "embeddings_floats" and data["texts"] == ["one", "two words"] and data["id"]
    assert [len(v) for v in data["embeddings"]] == [1024, 1024] and data["embeddings"][0] != data["embeddings"][1]
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "3"
    typed, _ = invoke(
        brt,
        "cohere.embed-multilingual-v3",
        {"texts": ["a"], "input_type": "search_query", "embedding_types": ["float", "int8"]},
    )
    assert typed["response_type"] == "embeddings_by_type" and set(typed["embeddings"]) == {"float", "int8"}
    assert all(isinstance(i, int) and -128 <= i <= 127 for i in typed["embeddings"]["int8"][0])
    with pytest.raises(ClientError) as err:
        invoke(brt, COHERE, {"texts": ["t"] * 97, "input_type": "clustering"})
    assert (
        err.value.response["Error"]["Code"] == "ValidationException" and "96" in err.value.response["Error"]["Message"]
    )
    with pytest.raises(ClientError) as err:
        invoke(brt, COHERE, {"texts": ["t"]})
    assert "input_type" in err.value.response["Error"]["Message"]
    assert len(invoke(brt, COHERE, {"texts": ["t"] * 96, "input_type": "clustering"})[0]["embeddings"]) == 96


def test_count_tokens(brt: Client) -> None:
    r = brt.count_tokens(
        modelId=CLAUDE, input={"converse": {"system": [{"text": "be brief"}], "messages": msgs("hi there")}}
    )
    assert (
        r["inputTokens"]
        == 4
        == brt.converse(modelId=CLAUDE, system=[{"text": "be brief"}], messages=msgs("hi there"))["usage"][
            "inputTokens"
        ]
    )
    r = brt.count_tokens(
        modelId=CLAUDE, input={"invokeModel": {"body": json.dumps({"prompt": "three small words"}).encode()}}
    )
    assert r["inputTokens"] == 3


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("429", 429, "ThrottlingException"),
        ("429-no-retry-after", 429, "ThrottlingException"),
        ("quota", 400, "ServiceQuotaExceededException"),
        ("401", 403, "AccessDeniedException"),
        ("503", 503, "ServiceUnavailableException"),
        ("context-length", 400, "ValidationException"),
    ],
)
def test_error_faults(brt: Client, billed: Callable[[str], bool], fault: str, status: int, code: str) -> None:
    for call in (brt.converse, brt.converse_stream):
        with pytest.raises(ClientError) as err:
            call(modelId=f"{CLAUDE}-fault-{fault}", messages=msgs("hi"))
        response = err.value.response
        assert response["Error"]["Code"] == code and response["ResponseMetadata"]["HTTPStatusCode"] == status
        assert "retry-after" not in response["ResponseMetadata"]["HTTPHeaders"]
        assert not billed(rid(response))
    if fault == "context-length":
        assert response["Error"]["Message"] == "Input is too long for requested model."
    with pytest.raises(ClientError) as err:
        invoke(brt, f"{TITAN}-fault-{fault}", {"inputText": "x"})
    assert err.value.response["Error"]["Code"] == code


def test_500_once_then_identical_retry_succeeds(brt: Client) -> None:
    messages = msgs(f"once {uuid.uuid4().hex}")
    with pytest.raises(ClientError) as err:
        brt.converse(modelId=f"{CLAUDE}-fault-500-once", messages=messages)
    assert err.value.response["Error"]["Code"] == "InternalServerException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert brt.converse(modelId=f"{CLAUDE}-fault-500-once", messages=messages)["stopReason"] == "end_turn"


def test_reset_and_hang(brt: Client, quick: Client, emulator: Emulator, billed: Callable[[str], bool]) -> None:
    marker = uuid.uuid4().hex
    for call in (brt.converse, brt.converse_stream):
        with pytest.raises(ConnectionClosedError):
            call(modelId=f"{CLAUDE}-fault-reset", messages=msgs(marker))
    t0 = time.monotonic()
    for call in (quick.converse, quick.converse_stream):
        with pytest.raises(ReadTimeoutError):
            call(modelId=f"{CLAUDE}-fault-hang", messages=msgs(marker))
    assert time.monotonic() - t0 < 3
    ids = [r.request_id for r in list(emulator.recorder.requests) if marker in json.dumps(r.body)]
    assert len(ids) == 4 and not any(billed(i) for i in ids)


def test_stream_cut_stall_malformed_no_done(brt: Client, quick: Client, billing_for: Billing) -> None:
    s = brt.converse_stream(modelId=f"{CLAUDE}-fault-cut", messages=msgs("hi"))
    got: list[dict[str, Any]] = []
    with pytest.raises(urllib3.exceptions.ProtocolError):
        got.extend(s["stream"])
    bill = billing_for(rid(s))
    assert bill.outcome == "cut" and 0 < bill.output_tokens == len(got) - 1 < 24  # minus messageStart

    s = quick.converse_stream(modelId=f"{CLAUDE}-fault-stall", messages=msgs("hi"))
    got = []
    with pytest.raises((urllib3.exceptions.ReadTimeoutError, ReadTimeoutError)):
        got.extend(s["stream"])
    s["stream"].close()
    bill = billing_for(rid(s))
    assert bill.outcome == "stall" and bill.output_tokens == 3 == len(got) - 1

    s = brt.converse_stream(modelId=f"{CLAUDE}-fault-malformed", messages=msgs("hi"))
    got = []
    with pytest.raises(ChecksumMismatch):
        got.extend(s["stream"])
    assert len(got) == 4 and billing_for(rid(s)).outcome == "malformed"

    s = brt.converse_stream(modelId=f"{CLAUDE}-fault-no-done", messages=msgs("hi"))
    events = collect(s)  # a clean end: boto3 does not raise, the caller must notice the missing messageStop
    assert len(events) == 25 and not any("messageStop" in e or "metadata" in e for e in events)
    bill = billing_for(rid(s))
    assert bill.outcome == "no-done" and bill.output_tokens == 24


def test_non_stream_body_faults(
    brt: Client, quick: Client, billing_for: Billing, billed: Callable[[str], bool]
) -> None:
    # botocore swallows an unparseable / truncated rest-json body: the result has no output and no usage
    for fault in ("cut", "malformed"):
        r = brt.converse(modelId=f"{CLAUDE}-fault-{fault}", messages=msgs("hi"))
        assert "output" not in r and "usage" not in r and "stopReason" not in r
        assert billing_for(rid(r)).outcome == fault
    marker = uuid.uuid4().hex
    with pytest.raises(ReadTimeoutError):
        quick.converse(modelId=f"{CLAUDE}-fault-stall", messages=msgs(marker))


def test_midstream_exceptions(brt: Client, billing_for: Billing) -> None:
    for fault, code in (
        ("throttle-midstream", "throttlingException"),
        ("model-stream-error", "modelStreamErrorException"),
    ):
        s = brt.converse_stream(modelId=f"{CLAUDE}-fault-{fault}", messages=msgs("hi"))
        got: list[dict[str, Any]] = []
        with pytest.raises(EventStreamError) as err:
            got.extend(s["stream"])
        assert err.value.response["Error"]["Code"] == code
        assert [next(iter(e)) for e in got] == ["messageStart", *["contentBlockDelta"] * 3]
        bill = billing_for(rid(s))
        assert bill.outcome == fault and bill.output_tokens == 3
    with pytest.raises(ClientError) as plain:
        brt.converse(modelId=f"{CLAUDE}-fault-throttle-midstream", messages=msgs("hi"))
    assert plain.value.response["Error"]["Code"] == "ThrottlingException"


def test_slow_first_token_via_header(make_client: Callable[..., Client]) -> None:
    slow = make_client(region="us-west-2", read_timeout=5.01)

    def add_headers(request: Any, **_: Any) -> None:
        request.headers["x-emulator-fault"] = "slow-first-token"
        request.headers["x-emulator-slow-ms"] = "300"

    slow.meta.events.register("before-sign.bedrock-runtime.*", add_headers)
    t0 = time.monotonic()
    s = slow.converse_stream(modelId=CLAUDE, messages=msgs("hi"))
    stream = iter(s["stream"])
    assert next(stream) == {"messageStart": {"role": "assistant"}}
    assert time.monotonic() - t0 >= 0.3
    assert len(list(stream)) == 27


def test_auth_unknown_fault_and_unknown_path(url: str, http: httpx.Client, emulator: Emulator) -> None:
    target = f"{url}/model/{CLAUDE}/converse"
    for headers in ({}, {"authorization": "Bearer abc"}):
        r = http.post(target, json={"messages": msgs("hi")}, headers=headers)
        assert r.status_code == 403 and r.headers["x-amzn-errortype"] == "UnrecognizedClientException"
        assert r.json() == {"message": "The security token included in the request is invalid."}
    r = http.post(target, json={"messages": msgs("hi")}, headers={"authorization": SIGV4, "x-emulator-fault": "503"})
    assert r.status_code == 503 and r.headers["x-amzn-errortype"] == "ServiceUnavailableException"
    r = http.post(
        f"{url}/model/{CLAUDE}-fault-bogus/converse", json={"messages": msgs("hi")}, headers={"authorization": SIGV4}
    )
    assert r.status_code == 400 and "bogus" in r.json()["message"]
    r = http.post(
        f"{url}/model/{CLAUDE}%3Aextra/converse", json={"messages": msgs("hi")}, headers={"authorization": SIGV4}
    )
    assert r.status_code == 200 and r.json()["output"]["message"]["content"][0]["text"].startswith(
        f"Hello from {CLAUDE}:extra."
    )
    (record,) = [x for x in list(emulator.recorder.requests) if x.request_id == r.headers["x-amzn-requestid"]]
    assert record.region == "ap-south-1"
    r = http.post(f"{url}/nope", headers={"authorization": SIGV4})
    assert r.status_code == 404 and r.headers["x-amzn-errortype"] == "UnknownOperationException"
    r = http.post(target, content=b"{nope", headers={"authorization": SIGV4})
    assert r.status_code == 400 and r.headers["x-amzn-errortype"] == "ValidationException"
