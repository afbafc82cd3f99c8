"""Anthropic wire vocabulary and request plumbing: errors, headers, SSE events, intake, pre-response faults."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway.emulators.config import EmulatorContext, resolve_timing
from gateway.emulators.faults import (
    HDR_FAULT,
    Behaviour,
    ErrorKind,
    Fault,
    UnknownFault,
    abort_connection,
    once_should_fail,
    parse_fault,
    split_model,
    wait_for_disconnect,
)
from gateway.emulators.openai.common import Call
from gateway.emulators.openai.wire import dumps, new_id
from gateway.emulators.recorder import BillingRecord, RequestRecord

PROVIDER = "anthropic"

# Anthropic-only fault: the stream starts, sends a few deltas, then an `event: error` (overloaded_error).
# It reuses the MALFORMED stream path (prefix of content events + one final odd event + clean end).
OVERLOADED_MIDSTREAM = Fault("overloaded-midstream", Behaviour.MALFORMED, ErrorKind.OVERLOADED)
EXTRA_FAULTS: Mapping[str, Fault] = {OVERLOADED_MIDSTREAM.name: OVERLOADED_MIDSTREAM}

CREDIT_TOO_LOW = (
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or "
    "purchase credits."
)

# kind -> (status, error type, default message)
ERRORS: Mapping[ErrorKind, tuple[int, str, str]] = {
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error", "Invalid request."),
    ErrorKind.AUTH: (401, "authentication_error", "invalid x-api-key"),
    ErrorKind.NOT_FOUND: (404, "not_found_error", "Not found"),
    ErrorKind.RATE_LIMIT: (
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization (emulated). Please retry after 1 second.",
    ),
    # The real API answers a low credit balance with 400 invalid_request_error (it has no quota type).
    ErrorKind.QUOTA: (400, "invalid_request_error", CREDIT_TOO_LOW),
    ErrorKind.SERVER: (500, "api_error", "Internal server error"),
    ErrorKind.OVERLOADED: (529, "overloaded_error", "Overloaded"),
    ErrorKind.CONTEXT_LENGTH: (400, "invalid_request_error", "prompt is too long: {tokens} tokens > {window} maximum"),
}
LIMITED = (ErrorKind.RATE_LIMIT,)
RATELIMIT_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")


class AnthropicError(Exception):
    """Raised inside a handler; turned into an Anthropic error body by the route wrapper."""

    def __init__(self, kind: ErrorKind, message: str | None = None) -> None:
        self.kind = kind
        self.message = message or ERRORS[kind][2]
        super().__init__(self.message)


def invalid(message: str) -> AnthropicError:
    return AnthropicError(ErrorKind.INVALID_REQUEST, message)


def context_length_error(ctx: EmulatorContext, tokens: int) -> AnthropicError:
    message = ERRORS[ErrorKind.CONTEXT_LENGTH][2].format(tokens=tokens, window=ctx.settings.context_window)
    return AnthropicError(ErrorKind.CONTEXT_LENGTH, message)


def event(name: str, payload: Mapping[str, Any] | None = None) -> bytes:
    """One SSE event; always with an `event:` line (the SDK ignores events without one)."""
    return f"event: {name}\ndata: {dumps({'type': name, **(payload or {})})}\n\n".encode()


def error_body(kind: ErrorKind, message: str) -> dict[str, Any]:
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
    if err.kind is ErrorKind.RATE_LIMIT and fault is not None and fault.retry_after:
        headers["retry-after"] = "1"
    body = {**error_body(err.kind, err.message), "request_id": request_id}
    return web.Response(status=status, text=dumps(body), content_type="application/json", headers=headers)


@dataclass
class AnthropicBillingRecord(BillingRecord):
    """A billing record plus the cache-write tokens Anthropic charges at a premium.

    `input_tokens` follows the gateway convention (the whole prompt, cache reads and writes included);
    `cached_input_tokens` = cache reads, `cache_write_input_tokens` = cache writes.
    """

    cache_write_input_tokens: int = 0


@dataclass
class AnthropicCall(Call):
    """A `Call` whose headers and billing are Anthropic's (so the OpenAI `send_json` can be reused)."""

    def headers(self) -> dict[str, str]:
        return base_headers(self.ctx, self.request_id)

    def bill(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cached: int = 0,
        reasoning: int = 0,
        stream: bool = False,
        outcome: str = "ok",
        cache_write: int = 0,
    ) -> None:
        self.ctx.recorder.record_billing(
            AnthropicBillingRecord(
                PROVIDER,
                self.model,
                self.endpoint,
                self.request_id,
                input_tokens,
                output_tokens,
                cached,
                reasoning,
                stream,
                outcome,
                cache_write_input_tokens=cache_write,
            )
        )


Handler = Callable[[AnthropicCall], Awaitable[web.StreamResponse]]


def parse_anthropic_fault(model: str, headers: Mapping[str, str]) -> tuple[str, Fault | None]:
    """The shared catalogue plus the Anthropic-only faults (model suffix wins over the header)."""
    base, name = split_model(model)
    if name is None:
        name = headers.get(HDR_FAULT) or None
    if name is not None and name.strip().lower() in EXTRA_FAULTS:
        return base, EXTRA_FAULTS[name.strip().lower()]
    return parse_fault(model, headers)


class _Reject(Exception):
    def __init__(self, call: AnthropicCall, error: AnthropicError) -> None:
        super().__init__(error.message)
        self.call = call
        self.error = error


def _authorised(request: web.Request) -> bool:
    if request.headers.get("x-api-key", "").strip():
        return True
    auth = request.headers.get("authorization", "")
    return auth.startswith("Bearer ") and bool(auth[7:].strip())


async def _intake(
    request: web.Request, ctx: EmulatorContext, endpoint: str, required: tuple[str, ...]
) -> AnthropicCall:
    request_id = new_id("req_")
    raw = await request.read() if request.can_read_body else b""
    body: Any = None
    parse_error = False
    if raw:
        try:
            body = json.loads(raw)
        except ValueError:
            parse_error = True
    model_field = body.get("model") if isinstance(body, dict) else None
    model = model_field if isinstance(model_field, str) else ""
    fault: Fault | None = None
    unknown: UnknownFault | None = None
    try:
        model, fault = parse_anthropic_fault(model, request.headers)
    except UnknownFault as exc:
        unknown = exc
    headers = {k.lower(): v for k, v in request.headers.items()}
    if ctx.settings.record_requests:
        fault_name = fault.name if fault else (unknown.name if unknown else None)
        ctx.recorder.record_request(
            RequestRecord(PROVIDER, request.method, request.path, headers, body, fault_name, request_id)
        )
    timing = resolve_timing(ctx.settings, headers)
    call = AnthropicCall(request, ctx, endpoint, request_id, raw, {}, model, fault, timing)
    if not _authorised(request):
        raise _Reject(call, AnthropicError(ErrorKind.AUTH, "x-api-key header is required"))
    if parse_error or (raw and not isinstance(body, dict)):
        raise _Reject(call, invalid("There was an error parsing the body of your request: it is not a JSON object."))
    if unknown is not None:
        raise _Reject(call, invalid(f"model: {unknown}"))
    call.body = body or {}
    for name in required:
        if call.body.get(name) is None:
            raise _Reject(call, invalid(f"{name}: Field required"))
    return call


async def _pre_faults(call: AnthropicCall) -> web.StreamResponse | None:
    """Faults that strike before the endpoint runs: error statuses, reset, hang."""
    fault = call.fault
    if fault is None:
        return None
    if fault.is_error and fault.error is not None:
        if fault.once and not once_should_fail(fault, call.model, call.request.headers, call.raw, call.ctx.once_seen):
            return None
        if fault.error is ErrorKind.CONTEXT_LENGTH:
            raise context_length_error(call.ctx, call.ctx.settings.context_window + 1)
        raise AnthropicError(fault.error)
    if fault.behaviour is Behaviour.RESET:
        abort_connection(call.request)
        return web.Response()
    if fault.behaviour is Behaviour.HANG:
        await wait_for_disconnect(call.request, call.ctx.settings.hang_cap_s)
        abort_connection(call.request)
        return web.Response()
    return None


def route(
    ctx: EmulatorContext, endpoint: str, handler: Handler, required: tuple[str, ...] = ()
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap a handler with intake (auth, JSON, faults, recording), pre-response faults and error mapping."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            call = await _intake(request, ctx, endpoint, required)
        except _Reject as rej:
            return error_response(ctx, rej.call.request_id, rej.error, rej.call.fault)
        try:
            early = await _pre_faults(call)
            return early if early is not None else await handler(call)
        except AnthropicError as err:
            return error_response(ctx, call.request_id, err, call.fault)

    return wrapped
