"""Bedrock InvokeModel embeddings, CountTokens and the fault catalogue on the emulator."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import urllib3
from botocore.eventstream import ChecksumMismatch
from botocore.exceptions import ClientError, ConnectionClosedError, EventStreamError, ReadTimeoutError

from gateway.emulators import Emulator
from tests.emulators.bedrock.support import (
    CLAUDE,
    COHERE,
    SIGV4,
    TITAN,
    Client,
    collect,
    msgs,
    rid,
)
from tests.emulators.wire_data import Billing


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
    assert bill.outcome == "cut" and 0 < bill.output_tokens == 3 * (len(got) - 1) < 24  # 3 tokens a delta

    s = quick.converse_stream(modelId=f"{CLAUDE}-fault-stall", messages=msgs("hi"))
    got = []
    with pytest.raises((urllib3.exceptions.ReadTimeoutError, ReadTimeoutError)):
        got.extend(s["stream"])
    s["stream"].close()
    bill = billing_for(rid(s))
    assert bill.outcome == "stall" and bill.output_tokens == 9 == 3 * (len(got) - 1)

    s = brt.converse_stream(modelId=f"{CLAUDE}-fault-malformed", messages=msgs("hi"))
    got = []
    with pytest.raises(ChecksumMismatch):
        got.extend(s["stream"])
    assert len(got) == 4 and billing_for(rid(s)).outcome == "malformed"

    s = brt.converse_stream(modelId=f"{CLAUDE}-fault-no-done", messages=msgs("hi"))
    events = collect(s)  # a clean end: boto3 does not raise, the caller must notice the missing messageStop
    assert len(events) == 9 and not any("messageStop" in e or "metadata" in e for e in events)
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
        assert bill.outcome == fault and bill.output_tokens == 9  # three deltas of three tokens
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
    assert len(list(stream)) == 11  # 8 deltas of 3 tokens, block stop, messageStop, metadata


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
