"""Mapping every OpenAI SDK error (and the raw transport errors under it) to the gateway's ErrorKind."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import httpx2
import openai

from gateway.providers.headers import rate_limit_reset_seconds, retry_after_seconds
from gateway.schema import ErrorKind, GatewayError, Usage

_CONTENT_FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})


def _status_kind(exc: openai.APIStatusError) -> ErrorKind:
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


def map_openai_error(
    exc: BaseException,
    *,
    provider: str,
    model: str,
    started: bool = False,
    usage: Usage | None = None,
) -> GatewayError:
    """Classify `exc`; `started` means content had already streamed, so a broken stream is truncated."""
    if isinstance(exc, GatewayError):
        return exc

    def err(kind: ErrorKind, message: str, **kw: object) -> GatewayError:
        if started and kind in (ErrorKind.CONNECTION, ErrorKind.TIMEOUT, ErrorKind.SERVER, ErrorKind.INVALID_RESPONSE):
            message = f"stream broke after it started ({kind.value}): {message}"
            kind = ErrorKind.TRUNCATED_STREAM
        return GatewayError(kind, message, provider=provider, model=model, usage=usage, **kw)  # type: ignore[arg-type]

    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        # The SDK's aiohttp transport reports every aiohttp connection error as ConnectTimeout;
        # the root cause tells a reset from a timeout.
        root = _root_cause(exc)
        if isinstance(root, aiohttp.ServerTimeoutError | asyncio.TimeoutError | TimeoutError) or (
            root is exc and isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException)
        ):
            return err(ErrorKind.TIMEOUT, "upstream timed out")
        return err(ErrorKind.CONNECTION, f"upstream connection failed: {type(root).__name__}: {root}")
    if isinstance(exc, openai.APIStatusError):
        kind = _status_kind(exc)
        headers = exc.response.headers
        retry_after = retry_after_seconds(headers)
        if retry_after is None and kind is ErrorKind.RATE_LIMITED:
            retry_after = rate_limit_reset_seconds(headers)
        return err(
            kind,
            f"{provider} returned {exc.status_code}: {_upstream_message(exc)}",
            retry_after=retry_after,
            provider_code=exc.code or exc.type,
        )
    if isinstance(exc, openai.APIError):
        return err(
            body_kind(exc.type, exc.code),
            f"{provider} reported an error: {_upstream_message(exc)}",
            provider_code=exc.code,
        )
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return err(ErrorKind.INVALID_RESPONSE, f"{provider} sent a malformed stream chunk: {exc}")
    if isinstance(exc, httpx2.TimeoutException | asyncio.TimeoutError | TimeoutError):
        return err(ErrorKind.TIMEOUT, "upstream timed out")
    if isinstance(exc, OSError | httpx2.TransportError | aiohttp.ClientError):
        return err(ErrorKind.CONNECTION, f"upstream transport error: {type(exc).__name__}: {exc}")
    return err(ErrorKind.INVALID_RESPONSE, f"unexpected error from {provider}: {type(exc).__name__}: {exc}")


def _root_cause(exc: BaseException) -> BaseException:
    seen = 0
    while exc.__cause__ is not None and seen < 10:
        exc, seen = exc.__cause__, seen + 1
    return exc


def _upstream_message(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return exc.message
