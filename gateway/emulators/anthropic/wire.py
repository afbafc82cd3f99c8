"""Anthropic wire vocabulary and request plumbing: errors, headers, SSE events, the Anthropic `Call` and intake."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from aiohttp import web

from gateway.emulators.call import Call, dumps, new_id
from gateway.emulators.config import EmulatorContext
from gateway.emulators.faults import Behaviour, Fault, FaultKind, FaultTable
from gateway.emulators.intake import Endpoint, Reject, read_intake
from gateway.emulators.intake import route as intake_route

PROVIDER = "anthropic"

# Anthropic-only fault: the stream starts, sends a few deltas, then an `event: error` (overloaded_error).
# It reuses the MALFORMED stream path (prefix of content events + one final odd event + clean end).
OVERLOADED_MIDSTREAM = Fault("overloaded-midstream", Behaviour.MALFORMED, FaultKind.OVERLOADED)
# The unknown-fault message quotes the shared catalogue only, as it always has on this wire.
FAULTS = FaultTable.with_extras(OVERLOADED_MIDSTREAM, list_extras=False)

CREDIT_TOO_LOW = (
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or "
    "purchase credits."
)

# kind -> (status, error type, default message)
ERRORS: Mapping[FaultKind, tuple[int, str, str]] = {
    FaultKind.INVALID_REQUEST: (400, "invalid_request_error", "Invalid request."),
    FaultKind.AUTH: (401, "authentication_error", "invalid x-api-key"),
    FaultKind.NOT_FOUND: (404, "not_found_error", "Not found"),
    FaultKind.RATE_LIMIT: (
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization (emulated). Please retry after 1 second.",
    ),
    # The real API answers a low credit balance with 400 invalid_request_error (it has no quota type).
    FaultKind.QUOTA: (400, "invalid_request_error", CREDIT_TOO_LOW),
    FaultKind.SERVER: (500, "api_error", "Internal server error"),
    FaultKind.OVERLOADED: (529, "overloaded_error", "Overloaded"),
    FaultKind.CONTEXT_LENGTH: (400, "invalid_request_error", "prompt is too long: {tokens} tokens > {window} maximum"),
}
LIMITED = (FaultKind.RATE_LIMIT,)
RATELIMIT_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")


class AnthropicError(Exception):
    """Raised inside a handler; turned into an Anthropic error body by the route wrapper."""

    def __init__(self, kind: FaultKind, message: str | None = None) -> None:
        self.kind = kind
        self.message = message or ERRORS[kind][2]
        super().__init__(self.message)


def invalid(message: str) -> AnthropicError:
    return AnthropicError(FaultKind.INVALID_REQUEST, message)


def context_length_error(ctx: EmulatorContext, tokens: int) -> AnthropicError:
    message = ERRORS[FaultKind.CONTEXT_LENGTH][2].format(tokens=tokens, window=ctx.settings.context_window)
    return AnthropicError(FaultKind.CONTEXT_LENGTH, message)


def event(name: str, payload: Mapping[str, Any] | None = None) -> bytes:
    """One SSE event; always with an `event:` line (the SDK ignores events without one)."""
    return f"event: {name}\ndata: {dumps({'type': name, **(payload or {})})}\n\n".encode()


def error_body(kind: FaultKind, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERRORS[kind][1], "message": message}}


def base_headers(ctx: EmulatorContext, request_id: str, limited: bool = False) -> dict[str, str]:
    s = ctx.settings
    reset = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    headers = {"request-id": request_id, "anthropic-organization-id": "emulator-org"}
    for kind in RATELIMIT_KINDS:
        limit = s.ratelimit_requests if kind == "requests" else s.ratelimit_tokens
        remaining = 0 if limited else (limit - 1 if kind == "requests" else limit)
        headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
        headers[f"anthropic-ratelimit-{kind}-remaining"] = str(remaining)
        headers[f"anthropic-ratelimit-{kind}-reset"] = reset
    return headers


def error_response(
    ctx: EmulatorContext, request_id: str, err: AnthropicError, fault: Fault | None = None
) -> web.Response:
    status = ERRORS[err.kind][0]
    headers = base_headers(ctx, request_id, limited=err.kind in LIMITED)
    if err.kind is FaultKind.RATE_LIMIT and fault is not None and fault.retry_after:
        headers["retry-after"] = "1"
    body = {**error_body(err.kind, err.message), "request_id": request_id}
    return web.Response(status=status, text=dumps(body), content_type="application/json", headers=headers)


@dataclass
class AnthropicCall(Call):
    """One accepted Anthropic request: Anthropic headers and errors; cache writes are billed apart."""

    PROVIDER = PROVIDER
    ERROR = AnthropicError
    FAULTS = FAULTS
    BILLS_CACHE_WRITES = True

    def headers(self) -> dict[str, str]:
        return base_headers(self.ctx, self.request_id)

    def error_response(self, err: Exception) -> web.Response:
        assert isinstance(err, AnthropicError)
        return error_response(self.ctx, self.request_id, err, self.fault)

    def fault_error(self, fault: Fault) -> Exception:
        if fault.error is FaultKind.CONTEXT_LENGTH:
            return context_length_error(self.ctx, self.ctx.settings.context_window + 1)
        assert fault.error is not None
        return AnthropicError(fault.error)


Handler = Callable[[AnthropicCall], Awaitable[web.StreamResponse]]


def _api_key(request: web.Request) -> str:
    auth = request.headers.get("authorization", "")
    return request.headers.get("x-api-key", "").strip() or (auth[7:].strip() if auth.startswith("Bearer ") else "")


async def _accept(
    request: web.Request, ctx: EmulatorContext, endpoint: str, required: tuple[str, ...]
) -> AnthropicCall:
    got = await read_intake(request, ctx, new_id("req_"), FAULTS)
    got.record(ctx, request, PROVIDER)
    call = got.call(AnthropicCall, request, ctx, endpoint)
    key = _api_key(request)
    if not key:
        raise Reject(call, AnthropicError(FaultKind.AUTH, "x-api-key header is required"))
    if ctx.settings.api_keys and key not in ctx.settings.api_keys:
        raise Reject(call, AnthropicError(FaultKind.AUTH))  # 401 authentication_error, invalid x-api-key
    if not got.is_object:
        raise Reject(call, invalid("There was an error parsing the body of your request: it is not a JSON object."))
    if got.unknown is not None:
        raise Reject(call, invalid(f"model: {got.unknown}"))
    call.body = got.body or {}
    for name in required:
        if call.body.get(name) is None:
            raise Reject(call, invalid(f"{name}: Field required"))
    return call


def route(ctx: EmulatorContext, endpoint: str, handler: Handler, required: tuple[str, ...] = ()) -> Endpoint:
    """Wrap a handler with intake (auth, JSON, faults, recording), pre-response faults and error mapping."""
    return intake_route(partial(_accept, ctx=ctx, endpoint=endpoint, required=required), handler)
