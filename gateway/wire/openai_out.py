"""Encoding normalized answers, stream events and errors in the OpenAI wire format (JSON bodies and SSE chunks)."""

from __future__ import annotations

import base64
import struct
from typing import Any

from gateway.json_codec import dumps
from gateway.schema import (
    ChatResponse,
    EmbeddingsResponse,
    ErrorEvent,
    FinishEvent,
    GatewayError,
    StartEvent,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def error_body(exc: GatewayError) -> dict[str, Any]:
    error: dict[str, Any] = {"message": exc.message, "type": exc.error_type, "param": exc.param, "code": exc.code}
    if len(exc.history) > 1:
        error["attempts"] = [a.as_dict() for a in exc.history]
    return {"error": error}


def chat_completion(response: ChatResponse) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": response.text, "refusal": None}
    if response.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in response.tool_calls
        ]
    return {
        "id": response.id,
        "object": "chat.completion",
        "created": response.created,
        "model": response.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": response.finish_reason}],
        "usage": usage_json(response.usage),
        "system_fingerprint": None,
    }


def embeddings(response: EmbeddingsResponse, encoding: str) -> dict[str, Any]:
    def encode(vector: tuple[float, ...]) -> Any:
        if encoding == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return list(vector)

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(response.vectors)],
        "model": response.model,
        "usage": {"prompt_tokens": response.usage.input_tokens, "total_tokens": response.usage.input_tokens},
    }


class ChunkEncoder:
    """Turns one stream's typed events into `chat.completion.chunk` SSE lines, exactly as OpenAI sends them."""

    def __init__(self, created: int, include_usage: bool) -> None:
        self._created = created
        self._include_usage = include_usage
        self._id = "chatcmpl-gateway"
        self._model = ""

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return b"data: " + dumps(chunk) + b"\n\n"

    def _usage_chunk(self, usage: Usage) -> bytes:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [],
            "usage": usage_json(usage),
        }
        return b"data: " + dumps(chunk) + b"\n\n"

    def encode(self, event: StreamEvent) -> bytes:
        """SSE bytes for one event (empty for events the OpenAI format has no place for)."""
        if isinstance(event, TextDelta):
            return self._chunk({"content": event.text})
        if isinstance(event, ToolCallDelta):
            call: dict[str, Any] = {"index": event.index}
            if event.id is not None:
                call["id"] = event.id
                call["type"] = "function"
            fn: dict[str, Any] = {"arguments": event.arguments}
            if event.name is not None:
                fn["name"] = event.name
            call["function"] = fn
            return self._chunk({"tool_calls": [call]})
        if isinstance(event, StartEvent):
            self._id, self._model = event.id, event.model
            return self._chunk({"role": "assistant", "content": ""})
        if isinstance(event, FinishEvent):
            out = self._chunk({}, event.finish_reason)
            if self._include_usage:
                out += self._usage_chunk(event.usage)
            return out + DONE
        if isinstance(event, ErrorEvent):
            return self._error(event)
        if event.type == "heartbeat":
            return KEEPALIVE
        return b""

    def _error(self, event: ErrorEvent) -> bytes:
        info = event.error
        if info.kind == "content_filtered":  # OpenAI's own way to say it: a content_filter finish
            out = self._chunk({}, "content_filter")
            if self._include_usage and event.usage is not None:
                out += self._usage_chunk(event.usage)
            return out + DONE
        body = {"error": {"message": info.message, "type": info.kind.value, "param": None, "code": info.code}}
        return b"data: " + dumps(body) + b"\n\n"  # no [DONE]: the SDK raises APIError on this


def sse_error(exc: GatewayError) -> bytes:
    return b"data: " + dumps(error_body(exc)) + b"\n\n"
