"""Gemini request plumbing: intake (URL model/method, API key, JSON, faults, recording), pre-response faults."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.emulators.config import EmulatorContext, resolve_timing
from gateway.emulators.faults import (
    CATALOGUE,
    HDR_FAULT,
    Behaviour,
    ErrorKind,
    Fault,
    UnknownFault,
    abort_connection,
    once_should_fail,
    split_model,
    wait_for_disconnect,
)
from gateway.emulators.gemini.wire import (
    PROVIDER,
    GeminiError,
    base_headers,
    error_response,
    fault_error,
    invalid,
    no_key_error,
)
from gateway.emulators.openai.common import Call
from gateway.emulators.openai.wire import new_id
from gateway.emulators.recorder import BillingRecord, RequestRecord

# Gemini-only faults, on top of the shared catalogue (the behaviour is reused, the name tells them apart).
ERROR_MIDSTREAM = Fault("error-midstream", Behaviour.MALFORMED)  # stream: a few chunks, then an error event
PROMPT_BLOCKED = Fault("prompt-blocked", Behaviour.CONTENT_FILTER)  # 200, no candidates, promptFeedback
LOCAL_FAULTS = {f.name: f for f in (ERROR_MIDSTREAM, PROMPT_BLOCKED)}
KNOWN_FAULTS = sorted([*CATALOGUE, *LOCAL_FAULTS])


@dataclass
class GeminiCall(Call):
    """A `Call` (so the shared send_json / stream helpers accept it) billed and answered as Gemini."""

    method: str = ""
    api_version: str = "v1beta"

    def headers(self) -> dict[str, str]:
        return base_headers(self.request_id)

    def bill(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cached: int = 0,
        reasoning: int = 0,
        stream: bool = False,
        outcome: str = "ok",
    ) -> None:
        record = BillingRecord(
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
        )
        self.ctx.recorder.record_billing(record)

    def is_fault(self, fault: Fault) -> bool:
        return self.fault is not None and self.fault.name == fault.name


Handler = Callable[[GeminiCall], Awaitable[web.StreamResponse]]


def resolve_fault(model: str, headers: Any) -> tuple[str, Fault | None]:
    """(base model, fault) from the `-fault-<name>` model suffix or the `x-emulator-fault` header."""
    base, name = split_model(model)
    if name is None:
        name = headers.get(HDR_FAULT) or None
    if name is None:
        return base, None
    key = name.strip().lower()
    fault = LOCAL_FAULTS.get(key) or CATALOGUE.get(key)
    if fault is None:
        raise UnknownFault(name)
    return base, fault


class _Reject(Exception):
    def __init__(self, call: GeminiCall, error: GeminiError) -> None:
        super().__init__(error.message)
        self.call = call
        self.error = error


async def _intake(request: web.Request, ctx: EmulatorContext, endpoint: str, model: str, method: str) -> GeminiCall:
    request_id = new_id("req_")
    raw = await request.read() if request.can_read_body else b""
    body: Any = None
    parse_error = False
    if raw:
        try:
            body = json.loads(raw)
        except ValueError:
            parse_error = True
    fault: Fault | None = None
    unknown: UnknownFault | None = None
    try:
        model, fault = resolve_fault(model, request.headers)
    except UnknownFault as exc:
        unknown = exc
        model = split_model(model)[0]
    headers = {k.lower(): v for k, v in request.headers.items()}
    fault_name = fault.name if fault else (unknown.name if unknown else None)
    if ctx.settings.record_requests:
        record = RequestRecord(PROVIDER, request.method, request.path_qs, headers, body, fault_name, request_id)
        ctx.recorder.record_request(record)
    timing = resolve_timing(ctx.settings, headers)
    call = GeminiCall(request, ctx, endpoint, request_id, raw, {}, model, fault, timing, method)
    call.api_version = request.match_info.get("version", "v1beta")
    key = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
    if not key.strip():
        raise _Reject(call, no_key_error())
    if parse_error or (raw and not isinstance(body, dict)):
        raise _Reject(call, invalid("Invalid JSON payload received. Expected a JSON object."))
    if unknown is not None:
        names = ", ".join(KNOWN_FAULTS)
        raise _Reject(call, invalid(f"Unknown emulator fault '{unknown.name}'. Known faults: {names}.", "model"))
    call.body = body or {}
    return call


async def pre_faults(call: GeminiCall) -> web.StreamResponse | None:
    """Faults that strike before the method runs: error statuses, reset, hang."""
    fault = call.fault
    if fault is None:
        return None
    if fault.is_error and fault.error is not None:
        if fault.once and not once_should_fail(fault, call.model, call.request.headers, call.raw, call.ctx.once_seen):
            return None
        raise fault_error(fault.error, fault, call.ctx.settings.context_window)
    if fault.name == ERROR_MIDSTREAM.name and call.endpoint != "streamGenerateContent":
        raise GeminiError(ErrorKind.OVERLOADED)  # no stream to break: the request fails as a whole
    if fault.behaviour is Behaviour.RESET:
        abort_connection(call.request)
        return web.Response()
    if fault.behaviour is Behaviour.HANG:
        await wait_for_disconnect(call.request, call.ctx.settings.hang_cap_s)
        abort_connection(call.request)
        return web.Response()
    return None


def not_found(path: str) -> GeminiError:
    return GeminiError(ErrorKind.NOT_FOUND, f"The requested URL {path} was not found on this server.")


async def run(
    request: web.Request, ctx: EmulatorContext, endpoint: str, model: str, method: str, handler: Handler
) -> web.StreamResponse:
    """Intake, pre-response faults, the handler, and the google.rpc error mapping."""
    try:
        call = await _intake(request, ctx, endpoint, model, method)
    except _Reject as rej:
        return error_response(rej.call.request_id, rej.error)
    try:
        early = await pre_faults(call)
        return early if early is not None else await handler(call)
    except GeminiError as err:
        return error_response(call.request_id, err)
