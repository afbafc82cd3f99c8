"""Error mapping shared by the Stainless-generated SDKs (openai, anthropic) and the lean transport under the same
adapters: transport errors by root cause, status errors through a provider's own classifier, and 'broken after it
started' → truncated_stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from types import ModuleType, SimpleNamespace
from typing import Any

import aiohttp
import httpx2

from gateway.providers.headers import retry_after_seconds
from gateway.schema import ErrorKind, GatewayError, Usage
from gateway.schema.errors import BROKE_MID_STREAM


class UpstreamStatus(Exception):
    """An error status the lean transport received, shaped like the SDKs' status errors for their classifiers:
    `status_code`, `body` (the parsed answer), `code` / `type` / `message` of its `error` object, `response.headers`."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
        inner = body.get("error", body) if isinstance(body, dict) else None
        error = inner if isinstance(inner, dict) else {}
        self.status_code, self.body, self.response = status, body, SimpleNamespace(headers=headers)
        code, kind = error.get("code"), error.get("type")
        self.code, self.type = (None if code is None else str(code)), (None if kind is None else str(kind))
        self.message = upstream_message(body, f"HTTP {status}")
        super().__init__(f"Error code: {status} - {self.message}")


def root_cause(exc: BaseException) -> BaseException:
    seen = 0
    while exc.__cause__ is not None and seen < 10:
        exc, seen = exc.__cause__, seen + 1
    return exc


def upstream_message(body: Any, fallback: str) -> str:
    """The provider's own message from an error body (`{"error": {"message"}}` in both SDKs' shapes)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return fallback


def map_sdk_error(
    exc: BaseException,
    *,
    sdk: ModuleType,
    provider: str,
    model: str,
    status_kind: Callable[[Any], ErrorKind],
    retry_after: Callable[[Any], float | None] = lambda e: retry_after_seconds(e.response.headers),
    started: bool = False,
    usage: Usage | None = None,
) -> GatewayError:
    """Classify `exc` raised by `sdk` (or by the transport under it); `started` means content had streamed."""
    if isinstance(exc, GatewayError):
        return exc

    def err(kind: ErrorKind, message: str, **kw: Any) -> GatewayError:
        if started and kind in BROKE_MID_STREAM:
            message = f"stream broke after it started ({kind.value}): {message}"
            kind = ErrorKind.TRUNCATED_STREAM
        return GatewayError(kind, message, provider=provider, model=model, usage=usage, **kw)

    if isinstance(exc, TimeoutError | httpx2.TimeoutException):  # TimeoutError is an OSError: test it first
        return err(ErrorKind.TIMEOUT, "upstream timed out")
    if isinstance(exc, sdk.APIConnectionError | httpx2.TransportError | aiohttp.ClientError | OSError):
        # The SDKs' aiohttp transport reports every aiohttp connection error as ConnectTimeout;
        # the root cause tells a reset from a timeout.
        root = root_cause(exc)
        if isinstance(root, aiohttp.ServerTimeoutError | asyncio.TimeoutError | TimeoutError | httpx2.TimeoutException):
            return err(ErrorKind.TIMEOUT, "upstream timed out")
        if root is exc and isinstance(exc, sdk.APITimeoutError):
            return err(ErrorKind.TIMEOUT, "upstream timed out")
        return err(ErrorKind.CONNECTION, f"upstream connection failed: {type(root).__name__}: {root}")
    if isinstance(exc, sdk.APIStatusError | UpstreamStatus):
        kind = status_kind(exc)
        status = getattr(exc, "status_code", None) or getattr(exc, "code", None)
        body = getattr(exc, "body", None) or getattr(exc, "details", None)  # google-genai keeps the body in .details
        return err(
            kind,
            f"{provider} returned {status}: {upstream_message(body, getattr(exc, 'message', None) or str(exc))}",
            retry_after=retry_after(exc) if kind in (ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED) else None,
            provider_code=getattr(exc, "code", None) or getattr(exc, "type", None),
        )
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError | KeyError | TypeError):
        return err(ErrorKind.INVALID_RESPONSE, f"{provider} sent a malformed response: {type(exc).__name__}: {exc}")
    return err(ErrorKind.INVALID_RESPONSE, f"unexpected error from {provider}: {type(exc).__name__}: {exc}")
