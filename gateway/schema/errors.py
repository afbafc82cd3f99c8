"""The gateway's one error tree: ErrorKind, retry/fallback semantics and HTTP mapping."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from gateway.schema.usage import Usage


class ErrorKind(StrEnum):
    """What went wrong, independent of which provider or SDK said it."""

    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    OVERLOADED = "overloaded"
    SERVER = "server"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    AUTH = "auth"  # the provider refused the gateway's own credentials (not the caller's fault)
    UNAUTHENTICATED = "unauthenticated"  # the caller's credential is missing, malformed, unknown, expired or revoked
    FORBIDDEN = "forbidden"  # the caller is known but may not do this
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    CONTEXT_LENGTH = "context_length"
    CONTENT_FILTERED = "content_filtered"
    BUDGET_EXCEEDED = "budget_exceeded"
    TRUNCATED_STREAM = "truncated_stream"
    INVALID_RESPONSE = "invalid_response"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


class ErrorInfo(BaseModel):
    """The serializable description of a GatewayError, carried by an error stream event."""

    model_config = ConfigDict(frozen=True)

    kind: ErrorKind
    message: str
    code: str
    provider: str | None = None
    model: str | None = None
    retryable: bool = False
    retry_after: float | None = None


# kind -> (retryable on the same model, fallbackable to another candidate, HTTP status, OpenAI error type)
_SEMANTICS: dict[ErrorKind, tuple[bool, bool, int, str]] = {
    ErrorKind.RATE_LIMITED: (True, True, 429, "rate_limit_error"),
    ErrorKind.QUOTA_EXCEEDED: (False, True, 429, "insufficient_quota"),
    ErrorKind.OVERLOADED: (True, True, 503, "overloaded_error"),
    ErrorKind.SERVER: (True, True, 502, "server_error"),
    ErrorKind.TIMEOUT: (True, True, 504, "timeout_error"),
    ErrorKind.CONNECTION: (True, True, 502, "connection_error"),
    ErrorKind.AUTH: (False, True, 502, "upstream_auth_error"),
    ErrorKind.UNAUTHENTICATED: (False, False, 401, "authentication_error"),
    ErrorKind.FORBIDDEN: (False, False, 403, "permission_error"),
    ErrorKind.BAD_REQUEST: (False, False, 400, "invalid_request_error"),
    ErrorKind.NOT_FOUND: (False, True, 404, "invalid_request_error"),
    ErrorKind.CONTEXT_LENGTH: (False, True, 400, "invalid_request_error"),
    ErrorKind.CONTENT_FILTERED: (False, False, 400, "invalid_request_error"),
    ErrorKind.BUDGET_EXCEEDED: (False, False, 402, "budget_exceeded"),
    ErrorKind.TRUNCATED_STREAM: (True, True, 502, "server_error"),
    ErrorKind.INVALID_RESPONSE: (True, True, 502, "server_error"),
    ErrorKind.CANCELLED: (False, False, 499, "cancelled"),
    ErrorKind.INTERNAL: (False, False, 500, "internal_error"),
}


# The client-facing `error.code` where OpenAI clients already look for a specific one.
_OPENAI_CODES = {
    ErrorKind.RATE_LIMITED: "rate_limit_exceeded",
    ErrorKind.QUOTA_EXCEEDED: "insufficient_quota",
    ErrorKind.CONTEXT_LENGTH: "context_length_exceeded",
    ErrorKind.CONTENT_FILTERED: "content_filter",
}


class GatewayError(Exception):
    """An error the gateway can classify, retry, fall back on, report and bill.

    `usage` carries what the provider billed for the failed call (a cut stream, a filtered
    answer), so a failure is never recorded as $0 when tokens were consumed. `code` is the
    client-facing error code (OpenAI style); `provider_code` is what the upstream said.
    """

    def __init__(
        self,
        kind: ErrorKind | str,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        retry_after: float | None = None,
        status_code: int | None = None,
        code: str | None = None,
        param: str | None = None,
        provider_code: str | None = None,
        usage: Usage | None = None,
        retryable: bool | None = None,
        fallbackable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = ErrorKind(kind)
        sem = _SEMANTICS[self.kind]
        self.message = message
        self.provider = provider
        self.model = model
        self.retry_after = retry_after
        self.status_code = status_code if status_code is not None else sem[2]
        self.code = code if code is not None else _OPENAI_CODES.get(self.kind, self.kind.value)
        self.param = param
        self.provider_code = provider_code
        self.usage = usage
        self.retryable = sem[0] if retryable is None else retryable
        self.fallbackable = sem[1] if fallbackable is None else fallbackable

    @property
    def error_type(self) -> str:
        """The OpenAI-style `error.type` for this kind."""
        return _SEMANTICS[self.kind][3]

    def _state(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "retry_after": self.retry_after,
            "status_code": self.status_code,
            "code": self.code,
            "param": self.param,
            "provider_code": self.provider_code,
            "usage": self.usage,
            "retryable": self.retryable,
            "fallbackable": self.fallbackable,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.kind.value, self.message, self._state()))

    def to_info(self) -> ErrorInfo:
        """The serializable description carried by an error stream event."""
        return ErrorInfo(
            kind=self.kind,
            message=self.message,
            code=self.code,
            provider=self.provider,
            model=self.model,
            retryable=self.retryable,
            retry_after=self.retry_after,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind.value!r}, message={self.message!r}, provider={self.provider!r})"


def _rebuild(cls: type[GatewayError], kind: str, message: str, state: dict[str, Any]) -> GatewayError:
    return cls(kind, message, **state)


def unauthenticated(reason: str) -> GatewayError:
    """401 `invalid_api_key`; `reason` says what was wrong with the credential and never contains it."""
    return GatewayError(ErrorKind.UNAUTHENTICATED, reason, code="invalid_api_key")


def forbidden(code: str, message: str, param: str | None = None) -> GatewayError:
    """403 with `code` one of model_not_allowed, daemon_not_allowed, identity_mismatch, admin_required, ..."""
    return GatewayError(ErrorKind.FORBIDDEN, message, code=code, param=param)


def validation_error(param: str, message: str) -> GatewayError:
    """A client error that names the offending field."""
    return GatewayError(ErrorKind.BAD_REQUEST, f"{param}: {message}", param=param, code="invalid_value")
