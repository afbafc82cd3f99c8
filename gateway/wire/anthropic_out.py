"""Encoding answers, stream events and errors in the Anthropic Messages wire format (for `/v1/messages`)."""

from __future__ import annotations

import json
from typing import Any

from gateway.json_codec import dumps
from gateway.schema import (
    ChatResponse,
    ErrorEvent,
    ErrorKind,
    FinishEvent,
    GatewayError,
    StartEvent,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal",
                "budget_exceeded": "max_tokens"}  # fmt: skip
_ERROR_TYPES = {
    ErrorKind.RATE_LIMITED: "rate_limit_error",
    ErrorKind.QUOTA_EXCEEDED: "rate_limit_error",
    ErrorKind.OVERLOADED: "overloaded_error",
    ErrorKind.GUARD_UNAVAILABLE: "overloaded_error",
    ErrorKind.TIMEOUT: "timeout_error",
    ErrorKind.BAD_REQUEST: "invalid_request_error",
    ErrorKind.CONTEXT_LENGTH: "invalid_request_error",
    ErrorKind.CONTENT_FILTERED: "invalid_request_error",
    ErrorKind.NOT_FOUND: "not_found_error",
    ErrorKind.BUDGET_EXCEEDED: "billing_error",
    ErrorKind.UNAUTHENTICATED: "authentication_error",
    ErrorKind.FORBIDDEN: "permission_error",
}
PING = b'event: ping\ndata: {"type":"ping"}\n\n'


def error_type(kind: ErrorKind) -> str:
    return _ERROR_TYPES.get(kind, "api_error")


def error_status(exc: GatewayError) -> int:
    return 529 if exc.kind is ErrorKind.OVERLOADED else exc.status_code  # what Anthropic clients expect


def error_body(exc: GatewayError) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type(exc.kind), "message": exc.message}
    if len(exc.history) > 1:
        error["attempts"] = [a.as_dict() for a in exc.history]
    return {"type": "error", "error": error}


def usage_json(usage: Usage) -> dict[str, Any]:
    """Anthropic's convention: input_tokens excludes cache reads and writes."""
    return {
        "input_tokens": usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
    }


def message(response: ChatResponse) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if response.text:
        content.append({"type": "text", "text": response.text})
    for call in response.tool_calls:
        args = json.loads(call.arguments) if call.arguments.strip() else {}
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": args})
    return {
        "id": response.id, "type": "message", "role": "assistant", "model": response.model, "content": content,
        "stop_reason": STOP_REASONS[response.finish_reason], "stop_sequence": None, "usage": usage_json(response.usage),
    }  # fmt: skip


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps({"type": name, **data}) + b"\n\n"


class MessageStreamEncoder:
    """Typed events → Anthropic's event sequence: content blocks opened and closed around the deltas."""

    def __init__(self) -> None:
        self._block = -1  # index of the open content block
        self._open: str | None = None  # "text" | "tool_use"
        self._tool = -1  # gateway tool index of the open tool_use block

    def _start(self, block: dict[str, Any]) -> bytes:
        out = self._stop()
        self._block += 1
        self._open = block["type"]
        return out + _sse("content_block_start", {"index": self._block, "content_block": block})

    def _stop(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _sse("content_block_stop", {"index": self._block})

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            out = b"" if self._open == "text" else self._start({"type": "text", "text": ""})
            return out + _sse("content_block_delta", {"index": self._block,
                                                      "delta": {"type": "text_delta", "text": event.text}})  # fmt: skip
        if isinstance(event, ToolCallDelta):
            out = b""
            if event.id is not None or self._open != "tool_use" or event.index != self._tool:
                self._tool = event.index
                out = self._start({"type": "tool_use", "id": event.id or f"toolu_{event.index}",
                                   "name": event.name or "", "input": {}})  # fmt: skip
            if event.arguments:
                out += _sse("content_block_delta", {"index": self._block, "delta": {
                    "type": "input_json_delta", "partial_json": event.arguments}})  # fmt: skip
            return out
        if isinstance(event, StartEvent):
            msg: dict[str, Any] = {
                "id": event.id,
                "type": "message",
                "role": "assistant",
                "model": event.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
            return _sse("message_start", {"message": msg})
        if isinstance(event, FinishEvent):
            delta = {"stop_reason": STOP_REASONS[event.finish_reason], "stop_sequence": None}
            return (self._stop() + _sse("message_delta", {"delta": delta, "usage": usage_json(event.usage)})
                    + _sse("message_stop", {}))  # fmt: skip
        if isinstance(event, ErrorEvent):
            info = event.error
            if info.kind is ErrorKind.CONTENT_FILTERED:  # Anthropic's own way to say it: a refusal stop
                delta = {"stop_reason": "refusal", "stop_sequence": None}
                usage = usage_json(event.usage or Usage())
                return self._stop() + _sse("message_delta", {"delta": delta, "usage": usage}) + _sse("message_stop", {})
            return _sse("error", {"error": {"type": error_type(info.kind), "message": info.message}})
        if event.type == "heartbeat":
            return PING
        return b""
