"""Classifying Anthropic's error types (by type, never by exception class: a mid-stream error has status 200)."""

from __future__ import annotations

from typing import Any

import anthropic

from gateway.providers.sdk_errors import map_sdk_error
from gateway.schema import ErrorKind, GatewayError, Usage

_TYPES = {
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "overloaded_error": ErrorKind.OVERLOADED,
    "api_error": ErrorKind.SERVER,
    "timeout_error": ErrorKind.TIMEOUT,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.AUTH,
    "not_found_error": ErrorKind.NOT_FOUND,
    "billing_error": ErrorKind.QUOTA_EXCEEDED,
    "request_too_large": ErrorKind.BAD_REQUEST,
    "invalid_request_error": ErrorKind.BAD_REQUEST,
}


def type_kind(error_type: str | None, message: str = "") -> ErrorKind:
    kind = _TYPES.get(error_type or "", ErrorKind.SERVER)
    if kind is ErrorKind.BAD_REQUEST and "prompt is too long" in message.lower():
        return ErrorKind.CONTEXT_LENGTH
    if kind is ErrorKind.BAD_REQUEST and "credit balance is too low" in message.lower():
        return ErrorKind.QUOTA_EXCEEDED  # how Anthropic reports an exhausted prepaid balance
    return kind


def _error(body: Any) -> dict[str, Any]:
    inner = body.get("error") if isinstance(body, dict) else None
    return inner if isinstance(inner, dict) else {}


def status_kind(exc: anthropic.APIStatusError) -> ErrorKind:
    error = _error(exc.body)
    if error.get("type"):
        return type_kind(error["type"], str(error.get("message", "")))
    status = exc.status_code
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status == 529 or status == 503:
        return ErrorKind.OVERLOADED
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 404:
        return ErrorKind.NOT_FOUND
    return ErrorKind.BAD_REQUEST if 400 <= status < 500 else ErrorKind.SERVER


def map_anthropic_error(
    exc: BaseException, *, provider: str, model: str, started: bool = False, usage: Usage | None = None
) -> GatewayError:
    return map_sdk_error(
        exc, sdk=anthropic, provider=provider, model=model, status_kind=status_kind, started=started, usage=usage
    )
