"""Gemini wire vocabulary: google.rpc error bodies, headers, SSE / JSON-array framing, key-spelling helpers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.emulators.call import dumps
from gateway.emulators.faults import Fault, FaultKind

PROVIDER = "gemini"
TYPE = "type.googleapis.com/google.rpc."
RATE_LIMIT_MESSAGE = "Resource exhausted: too many requests per minute for this model (emulated). Please retry in 1s."
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)
BAD_KEY_MESSAGE = "API key not valid. Please pass a valid API key."
NO_KEY_MESSAGE = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
CONTEXT_MESSAGE = "The input token count ({tokens}) exceeds the maximum number of tokens allowed ({window})."

# kind -> (HTTP status, google.rpc status, default message)
ERRORS: Mapping[FaultKind, tuple[int, str, str]] = {
    FaultKind.INVALID_REQUEST: (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    FaultKind.AUTH: (400, "INVALID_ARGUMENT", BAD_KEY_MESSAGE),
    FaultKind.NOT_FOUND: (404, "NOT_FOUND", "Requested entity was not found."),
    FaultKind.RATE_LIMIT: (429, "RESOURCE_EXHAUSTED", RATE_LIMIT_MESSAGE),
    FaultKind.QUOTA: (429, "RESOURCE_EXHAUSTED", QUOTA_MESSAGE),
    FaultKind.SERVER: (
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    FaultKind.OVERLOADED: (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    FaultKind.CONTEXT_LENGTH: (400, "INVALID_ARGUMENT", CONTEXT_MESSAGE),
}


class GeminiError(Exception):
    """Raised inside a handler; turned into a google.rpc error body by the route wrapper."""

    def __init__(
        self,
        kind: FaultKind,
        message: str | None = None,
        details: list[dict[str, Any]] | None = None,
        status: tuple[int, str] | None = None,
    ) -> None:
        code, rpc_status, default = ERRORS[kind]
        self.kind = kind
        self.message = message or default
        self.details = details
        self.code, self.status = status or (code, rpc_status)
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def invalid(message: str, field: str | None = None) -> GeminiError:
    """400 INVALID_ARGUMENT, with a BadRequest field violation when `field` is given."""
    details = None
    if field is not None:
        details = [{"@type": TYPE + "BadRequest", "fieldViolations": [{"field": field, "description": message}]}]
    return GeminiError(FaultKind.INVALID_REQUEST, message, details)


def fault_error(kind: FaultKind, fault: Fault | None, window: int) -> GeminiError:
    """The error a catalogue fault of class `kind` produces on the Gemini wire."""
    if kind is FaultKind.RATE_LIMIT:
        details = [
            {
                "@type": TYPE + "QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                    }
                ],
            }
        ]
        if fault is not None and fault.retry_after:
            details.append({"@type": TYPE + "RetryInfo", "retryDelay": "1s"})
        return GeminiError(kind, details=details)
    if kind is FaultKind.QUOTA:
        details = [
            {
                "@type": TYPE + "QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                    }
                ],
            },
            {
                "@type": TYPE + "Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
        ]
        return GeminiError(kind, details=details)
    if kind is FaultKind.AUTH:
        return bad_key_error()
    if kind is FaultKind.CONTEXT_LENGTH:
        return context_length_error(window + 1, window)
    return GeminiError(kind)


def bad_key_error() -> GeminiError:
    details: list[dict[str, Any]] = [
        {
            "@type": TYPE + "ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        },
        {"@type": TYPE + "LocalizedMessage", "locale": "en-US", "message": BAD_KEY_MESSAGE},
    ]
    return GeminiError(FaultKind.AUTH, BAD_KEY_MESSAGE, details)


def no_key_error() -> GeminiError:
    details = [
        {
            "@type": TYPE + "ErrorInfo",
            "reason": "CONSUMER_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
    ]
    return GeminiError(FaultKind.AUTH, NO_KEY_MESSAGE, details, status=(403, "PERMISSION_DENIED"))


def context_length_error(tokens: int, window: int) -> GeminiError:
    return GeminiError(FaultKind.CONTEXT_LENGTH, CONTEXT_MESSAGE.format(tokens=tokens, window=window))


def base_headers(request_id: str) -> dict[str, str]:
    return {"x-request-id": request_id, "server-timing": "gfet4t7; dur=1", "vary": "Origin, X-Origin, Referer"}


def error_response(request_id: str, err: GeminiError) -> web.Response:
    return web.Response(
        status=err.code, text=dumps(err.body()), content_type="application/json", headers=base_headers(request_id)
    )


def sse_event(value: Any) -> bytes:
    """One Gemini SSE event: `data: <json>\\r\\n\\r\\n` (no event name, no [DONE])."""
    return b"data: " + dumps(value).encode() + b"\r\n\r\n"


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def pick(obj: Any, camel: str, default: Any = None) -> Any:
    """`obj[camel]`, else `obj[snake_case(camel)]`: the SDK mixes both spellings."""
    if not isinstance(obj, Mapping):
        return default
    if camel in obj:
        return obj[camel]
    return obj.get(snake(camel), default)
