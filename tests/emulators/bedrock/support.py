"""Shared constants and helpers of the Bedrock emulator tests (boto3 `bedrock-runtime` and raw httpx)."""

from __future__ import annotations

from typing import Any

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
