"""The gateway's one error tree: ErrorKind, retry/fallback semantics and HTTP mapping."""

from __future__ import annotations

from dataclasses import dataclass
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
    GUARD_UNAVAILABLE = "guard_unavailable"  # a safety guard could not give a verdict (fail_closed): nothing forwarded
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


@dataclass(frozen=True, slots=True)
class Semantics:
    """How the gateway treats one kind of error: one row per kind, one column per rule."""

    status: int  # the HTTP status a client sees
    type: str  # the OpenAI-style `error.type`
    retryable: bool = False  # a new attempt could succeed (the default of GatewayError.retryable)
    same_model: bool = False  # ...and it is worth making on the same model (a silent upstream is not waited on again)
    fallbackable: bool = False  # another candidate could serve it
    health: bool = False  # it says the upstream is unhealthy: counts against its circuit breaker
    mid_stream: bool = False  # raised after content was relayed, the stream broke: truncated_stream, continuable


_T, _F = True, False
# kind:                                 status type                 retry same   fallback health mid_stream
SEMANTICS: dict[ErrorKind, Semantics] = {
    ErrorKind.RATE_LIMITED: Semantics(429, "rate_limit_error", _T, _T, _T, _F, _T),
    ErrorKind.QUOTA_EXCEEDED: Semantics(429, "insufficient_quota", _F, _F, _T, _F, _F),
    ErrorKind.OVERLOADED: Semantics(503, "overloaded_error", _T, _T, _T, _T, _T),
    ErrorKind.SERVER: Semantics(502, "server_error", _T, _T, _T, _T, _T),
    ErrorKind.TIMEOUT: Semantics(504, "timeout_error", _T, _F, _T, _T, _T),
    ErrorKind.CONNECTION: Semantics(502, "connection_error", _T, _T, _T, _T, _T),
    ErrorKind.AUTH: Semantics(502, "upstream_auth_error", _F, _F, _T, _F, _F),
    ErrorKind.UNAUTHENTICATED: Semantics(401, "authentication_error"),
    ErrorKind.FORBIDDEN: Semantics(403, "permission_error"),
    ErrorKind.BAD_REQUEST: Semantics(400, "invalid_request_error"),
    ErrorKind.NOT_FOUND: Semantics(404, "invalid_request_error", _F, _F, _T, _F, _F),
    ErrorKind.CONTEXT_LENGTH: Semantics(400, "invalid_request_error", _F, _F, _T, _F, _F),
    ErrorKind.CONTENT_FILTERED: Semantics(400, "invalid_request_error"),
    ErrorKind.BUDGET_EXCEEDED: Semantics(402, "budget_exceeded"),
    ErrorKind.GUARD_UNAVAILABLE: Semantics(503, "guard_unavailable"),
    ErrorKind.TRUNCATED_STREAM: Semantics(502, "server_error", _T, _T, _T, _T, _T),
    ErrorKind.INVALID_RESPONSE: Semantics(502, "server_error", _T, _T, _T, _T, _T),
    ErrorKind.CANCELLED: Semantics(499, "cancelled"),
    ErrorKind.INTERNAL: Semantics(500, "internal_error"),
}
# Views of the table for the places that test membership on the hot path.
SAME_MODEL = frozenset(k for k, s in SEMANTICS.items() if s.same_model)
HEALTH_FAILURES = frozenset(k for k, s in SEMANTICS.items() if s.health)
BROKE_MID_STREAM = frozenset(k for k, s in SEMANTICS.items() if s.mid_stream)


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """One attempt of a request that failed: where, and how (kept for every attempt, not only the last)."""

    model: str | None
    provider: str | None
    kind: ErrorKind
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "provider": self.provider, "kind": self.kind.value, "message": self.message}


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

    def __init__(  # noqa: PLR0913 -- an error record: every field after the message is keyword-only
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
        history: tuple[FailedAttempt, ...] = (),
    ) -> None:
        super().__init__(message)
        self.kind = ErrorKind(kind)
        sem = SEMANTICS[self.kind]
        self.message = message
        self.provider = provider
        self.model = model
        self.retry_after = retry_after
        self.status_code = status_code if status_code is not None else sem.status
        self.code = code if code is not None else _OPENAI_CODES.get(self.kind, self.kind.value)
        self.param = param
        self.provider_code = provider_code
        self.usage = usage
        self.retryable = sem.retryable if retryable is None else retryable
        self.fallbackable = sem.fallbackable if fallbackable is None else fallbackable
        self.history = history  # every failed attempt of the request, in order, when it had more than one

    @property
    def semantics(self) -> Semantics:
        return SEMANTICS[self.kind]

    def attempt(self) -> FailedAttempt:
        """This error as one failed attempt of a request's history."""
        return FailedAttempt(self.model, self.provider, self.kind, self.message)

    @property
    def error_type(self) -> str:
        """The OpenAI-style `error.type` for this kind."""
        return SEMANTICS[self.kind].type

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
            "history": self.history,
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
