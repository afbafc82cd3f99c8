"""Classifying OpenAI's error statuses and in-stream error bodies into the gateway's ErrorKind."""

from __future__ import annotations

import openai

from gateway.providers.headers import rate_limit_reset_seconds, retry_after_seconds
from gateway.providers.sdk_errors import map_sdk_error
from gateway.schema import ErrorKind, GatewayError, Usage

_CONTENT_FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})


def status_kind(exc: openai.APIStatusError) -> ErrorKind:
    code = (exc.code or "").lower()
    status = exc.status_code
    if status == 429:
        return ErrorKind.QUOTA_EXCEEDED if "insufficient_quota" in (code, exc.type) else ErrorKind.RATE_LIMITED
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status == 408:
        return ErrorKind.TIMEOUT
    if status in (400, 409, 413, 422):
        if code == "context_length_exceeded":
            return ErrorKind.CONTEXT_LENGTH
        if code in _CONTENT_FILTER_CODES:
            return ErrorKind.CONTENT_FILTERED
        return ErrorKind.BAD_REQUEST
    if status in (503, 529):
        return ErrorKind.OVERLOADED
    return ErrorKind.SERVER


def body_kind(error_type: str | None, code: str | None) -> ErrorKind:
    """An error that arrived inside a 200 stream: classify by the error body's type/code."""
    label = f"{error_type or ''} {code or ''}".lower()
    if "rate_limit" in label:
        return ErrorKind.RATE_LIMITED
    if "overloaded" in label:
        return ErrorKind.OVERLOADED
    if "context_length" in label:
        return ErrorKind.CONTEXT_LENGTH
    if "content_filter" in label or "content_policy" in label:
        return ErrorKind.CONTENT_FILTERED
    if "invalid_request" in label:
        return ErrorKind.BAD_REQUEST
    return ErrorKind.SERVER


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    wait = retry_after_seconds(headers)
    return wait if wait is not None else rate_limit_reset_seconds(headers)


def map_openai_error(
    exc: BaseException, *, provider: str, model: str, started: bool = False, usage: Usage | None = None
) -> GatewayError:
    """Classify `exc`; `started` means content had already streamed, so a broken stream is truncated."""
    return map_sdk_error(
        exc,
        sdk=openai,
        provider=provider,
        model=model,
        status_kind=status_kind,
        retry_after=_retry_after,
        started=started,
        usage=usage,
    )
