"""Provider-neutral request intake: body and JSON, fault resolution, recording, pre-response faults, routing."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from gateway.emulators.call import Call
from gateway.emulators.config import EmulatorContext, Timing, resolve_timing
from gateway.emulators.faults import (
    Behaviour,
    Fault,
    FaultTable,
    UnknownFault,
    abort_connection,
    once_should_fail,
    resolve_fault,
    wait_for_disconnect,
)
from gateway.emulators.recorder import RequestRecord

C = TypeVar("C", bound=Call)
Endpoint = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Intake:
    """What every provider reads off a request before its own checks (auth, required fields, ...)."""

    request_id: str
    raw: bytes
    body: Any  # the parsed JSON (None for an empty or unparsable body)
    parsed: bool
    model: str  # without the fault suffix
    fault: Fault | None
    unknown: UnknownFault | None
    headers: dict[str, str]  # lower-cased names
    timing: Timing

    @property
    def fault_name(self) -> str | None:
        return self.fault.name if self.fault else (self.unknown.name if self.unknown else None)

    @property
    def is_object(self) -> bool:
        """The body is empty or a JSON object."""
        return self.parsed and (not self.raw or isinstance(self.body, dict))

    def record(
        self,
        ctx: EmulatorContext,
        request: web.Request,
        provider: str,
        record_type: type[RequestRecord] = RequestRecord,
        **extra: Any,
    ) -> None:
        """Record the request (if the emulator records requests); `extra` overrides/extends the record's fields."""
        if ctx.settings.record_requests:
            fields = {"path": request.path, "body": self.body, **extra}
            ctx.recorder.record_request(
                record_type(
                    provider=provider,
                    method=request.method,
                    headers=self.headers,
                    fault=self.fault_name,
                    request_id=self.request_id,
                    **fields,
                )
            )

    def call(self, call_type: type[C], request: web.Request, ctx: EmulatorContext, endpoint: str, **extra: Any) -> C:
        body: dict[str, Any] = {}  # each provider sets the body once its intake checks pass
        args = (self.request_id, self.raw, body, self.model, self.fault, self.timing)
        return call_type(request, ctx, endpoint, *args, **extra)


async def read_intake(
    request: web.Request, ctx: EmulatorContext, request_id: str, faults: FaultTable, model: str | None = None
) -> Intake:
    """Read the body, parse it, resolve the fault; `model` defaults to the body's `model` field."""
    raw = await request.read() if request.can_read_body else b""
    body: Any = None
    parsed = True
    if raw:
        try:
            body = json.loads(raw)
        except ValueError:
            parsed = False
    if model is None:
        model_field = body.get("model") if isinstance(body, dict) else None
        model = model_field if isinstance(model_field, str) else ""
    model, fault, unknown = resolve_fault(model, request.headers, faults)
    if fault is None and unknown is None and (down := ctx.outage(model)) is not None:
        fault = faults.faults[down]
    headers = {k.lower(): v for k, v in request.headers.items()}
    return Intake(request_id, raw, body, parsed, model, fault, unknown, headers, resolve_timing(ctx.settings, headers))


class Reject(Exception):
    """Raised by an intake: the request is refused with `error` before any fault or handler runs."""

    def __init__(self, call: Call, error: Exception) -> None:
        super().__init__(str(error))
        self.call = call
        self.error = error


async def pre_faults(call: Call) -> web.StreamResponse | None:
    """Faults that strike before the endpoint runs: error statuses, provider-only early errors, reset, hang."""
    fault = call.fault
    if fault is None:
        return None
    if fault.is_error and fault.error is not None:
        if fault.once and not once_should_fail(fault, call.model, call.request.headers, call.raw, call.ctx.once_seen):
            return None
        raise call.fault_error(fault)
    early = call.early_error()
    if early is not None:
        raise early
    if fault.behaviour is Behaviour.RESET:
        abort_connection(call.request)
        return web.Response()
    if fault.behaviour is Behaviour.HANG:
        await wait_for_disconnect(call.request, call.ctx.settings.hang_cap_s)
        abort_connection(call.request)
        return web.Response()
    return None


async def serve(accept: Awaitable[C], handler: Callable[[C], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Intake, pre-response faults, the handler, and the mapping of the provider's errors onto its wire."""
    try:
        call = await accept
    except Reject as rej:
        return rej.call.error_response(rej.error)
    try:
        early = await pre_faults(call)
        return early if early is not None else await handler(call)
    except call.ERROR as err:
        return call.error_response(err)


def route(
    accept: Callable[[web.Request], Awaitable[C]], handler: Callable[[C], Awaitable[web.StreamResponse]]
) -> Endpoint:
    """An aiohttp handler: `accept` the request (the provider's intake), then `serve` it with `handler`."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        return await serve(accept(request), handler)

    return wrapped
