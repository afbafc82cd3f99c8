"""OpenAI wire vocabulary: error bodies and statuses, response headers, ids and JSON/SSE encoding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.emulators.call import dumps, new_id
from gateway.emulators.config import EmulatorContext
from gateway.emulators.faults import Fault, FaultKind

__all__ = [
    "ERRORS",
    "PROVIDER",
    "OpenAIError",
    "base_headers",
    "context_length_error",
    "dumps",
    "error_response",
    "new_id",
    "sse",
]

PROVIDER = "openai"

# kind -> (status, type, code, default message)
ERRORS: Mapping[FaultKind, tuple[int, str, str | None, str]] = {
    FaultKind.INVALID_REQUEST: (400, "invalid_request_error", None, "Invalid request."),
    FaultKind.AUTH: (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    FaultKind.NOT_FOUND: (404, "invalid_request_error", None, "Invalid URL."),
    FaultKind.RATE_LIMIT: (
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests (emulated). Please try again in 1s.",
    ),
    FaultKind.QUOTA: (
        429,
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    FaultKind.SERVER: (
        500,
        "server_error",
        "server_error",
        "The server had an error while processing your request. Sorry about that!",
    ),
    FaultKind.OVERLOADED: (
        503,
        "server_error",
        "overloaded",
        "The engine is currently overloaded, please try again later.",
    ),
    FaultKind.CONTEXT_LENGTH: (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is {window} tokens. However, your messages resulted in {tokens} tokens. "
        "Please reduce the length of the messages.",
    ),
}


class OpenAIError(Exception):
    """Raised inside a handler; turned into an OpenAI error body by the route wrapper."""

    def __init__(self, kind: FaultKind, message: str | None = None, param: str | None = None) -> None:
        super().__init__(message or ERRORS[kind][3])
        self.kind = kind
        self.message = message or ERRORS[kind][3]
        self.param = param


def sse(value: Any) -> bytes:
    """A chat-style SSE event (`data:` only)."""
    return b"data: " + dumps(value).encode() + b"\n\n"


def base_headers(ctx: EmulatorContext, request_id: str, limited: bool = False) -> dict[str, str]:
    s = ctx.settings
    return {
        "x-request-id": request_id,
        "openai-version": "2020-10-01",
        "x-ratelimit-limit-requests": str(s.ratelimit_requests),
        "x-ratelimit-limit-tokens": str(s.ratelimit_tokens),
        "x-ratelimit-remaining-requests": "0" if limited else str(s.ratelimit_requests - 1),
        "x-ratelimit-remaining-tokens": "0" if limited else str(s.ratelimit_tokens),
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-reset-tokens": "1s",
    }


def error_response(ctx: EmulatorContext, request_id: str, err: OpenAIError, fault: Fault | None = None) -> web.Response:
    status, etype, code, _ = ERRORS[err.kind]
    headers = base_headers(ctx, request_id, limited=err.kind in (FaultKind.RATE_LIMIT, FaultKind.QUOTA))
    if err.kind is FaultKind.RATE_LIMIT and fault is not None and fault.retry_after:
        headers["retry-after"] = "1"
        headers["retry-after-ms"] = "1000"
    body = {"error": {"message": err.message, "type": etype, "param": err.param, "code": code}}
    return web.Response(status=status, text=dumps(body), content_type="application/json", headers=headers)


def context_length_error(ctx: EmulatorContext, tokens: int, param: str) -> OpenAIError:
    window = ctx.settings.context_window
    message = ERRORS[FaultKind.CONTEXT_LENGTH][3].format(window=window, tokens=tokens)
    return OpenAIError(FaultKind.CONTEXT_LENGTH, message, param)
