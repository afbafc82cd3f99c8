"""Classifying google-genai errors (google.rpc statuses) and transport failures into the gateway's ErrorKind."""

from __future__ import annotations

from typing import Any

from google.genai import errors

from gateway.providers.headers import parse_duration
from gateway.providers.sdk_errors import map_sdk_error
from gateway.schema import ErrorKind, GatewayError, Usage

_STATUS = {
    "RESOURCE_EXHAUSTED": ErrorKind.RATE_LIMITED,
    "UNAVAILABLE": ErrorKind.OVERLOADED,
    "INTERNAL": ErrorKind.SERVER,
    "DEADLINE_EXCEEDED": ErrorKind.TIMEOUT,
    "PERMISSION_DENIED": ErrorKind.AUTH,
    "UNAUTHENTICATED": ErrorKind.AUTH,
    "NOT_FOUND": ErrorKind.NOT_FOUND,
    "INVALID_ARGUMENT": ErrorKind.BAD_REQUEST,
    "FAILED_PRECONDITION": ErrorKind.BAD_REQUEST,
}
_HTTP = {429: ErrorKind.RATE_LIMITED, 503: ErrorKind.OVERLOADED, 504: ErrorKind.TIMEOUT, 401: ErrorKind.AUTH,
         403: ErrorKind.AUTH, 404: ErrorKind.NOT_FOUND}  # fmt: skip


def _details(exc: errors.APIError) -> list[dict[str, Any]]:
    body = exc.details if isinstance(exc.details, dict) else {}
    inner = body.get("error", body) if isinstance(body, dict) else {}
    found = inner.get("details") if isinstance(inner, dict) else None
    return [d for d in found or () if isinstance(d, dict)]


def status_kind(exc: errors.APIError) -> ErrorKind:
    message = (exc.message or "").lower()
    if any(d.get("reason") == "API_KEY_INVALID" for d in _details(exc)):
        return ErrorKind.AUTH
    if "exceeds the maximum number of tokens" in message or "input token count" in message:
        return ErrorKind.CONTEXT_LENGTH
    if exc.status == "RESOURCE_EXHAUSTED" and any(
        "PerDay" in str(v.get("quotaId", ""))
        for d in _details(exc)
        for v in d.get("violations") or ()
        if isinstance(v, dict)
    ):
        return ErrorKind.QUOTA_EXCEEDED  # a daily quota: retrying soon cannot help
    kind = _STATUS.get(exc.status or "") or _HTTP.get(exc.code)
    if kind is not None:
        return kind
    return ErrorKind.BAD_REQUEST if 400 <= (exc.code or 500) < 500 else ErrorKind.SERVER


def retry_after(exc: errors.APIError) -> float | None:
    """google.rpc.RetryInfo's `retryDelay` ("7s")."""
    for detail in _details(exc):
        if str(detail.get("@type", "")).endswith("RetryInfo") and isinstance(detail.get("retryDelay"), str):
            return parse_duration(detail["retryDelay"])
    return None


class _GenaiSdk:
    """The attribute names `map_sdk_error` looks for, pointed at google-genai's classes."""

    APIConnectionError = type("NoSuchError", (Exception,), {})
    APITimeoutError = APIConnectionError
    APIStatusError = errors.APIError


def map_gemini_error(
    exc: BaseException, *, provider: str, model: str, started: bool = False, usage: Usage | None = None
) -> GatewayError:
    return map_sdk_error(
        exc, sdk=_GenaiSdk, provider=provider, model=model, status_kind=status_kind,  # type: ignore[arg-type]
        retry_after=retry_after, started=started, usage=usage,
    )  # fmt: skip
