"""OpenAI request plumbing: intake (auth, JSON, fault parsing, recording), pre-response faults, sending."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.emulators.config import EmulatorContext, Timing, resolve_timing
from gateway.emulators.faults import (
    Behaviour,
    ErrorKind,
    Fault,
    UnknownFault,
    abort_connection,
    once_should_fail,
    parse_fault,
    sleep_if,
    wait_for_disconnect,
)
from gateway.emulators.openai.wire import (
    PROVIDER,
    OpenAIError,
    base_headers,
    context_length_error,
    dumps,
    error_response,
    new_id,
)
from gateway.emulators.recorder import BillingRecord, RequestRecord


@dataclass
class Call:
    """One accepted request, with everything a handler needs."""

    request: web.Request
    ctx: EmulatorContext
    endpoint: str
    request_id: str
    raw: bytes
    body: dict[str, Any]
    model: str
    fault: Fault | None
    timing: Timing

    @property
    def behaviour(self) -> Behaviour | None:
        return self.fault.behaviour if self.fault else None

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
    ) -> None:
        self.ctx.recorder.record_billing(
            BillingRecord(
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
        )


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


async def _intake(request: web.Request, ctx: EmulatorContext, endpoint: str, required: tuple[str, ...]) -> Call:
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
        model, fault = parse_fault(model, request.headers)
    except UnknownFault as exc:
        unknown = exc
    headers = {k.lower(): v for k, v in request.headers.items()}
    fault_name = fault.name if fault else (unknown.name if unknown else None)
    if ctx.settings.record_requests:
        record = RequestRecord(PROVIDER, request.method, request.path, headers, body, fault_name, request_id)
        ctx.recorder.record_request(record)
    call = Call(request, ctx, endpoint, request_id, raw, {}, model, fault, resolve_timing(ctx.settings, headers))
    auth = request.headers.get("authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        raise _Reject(call, OpenAIError(ErrorKind.AUTH, "You didn't provide an API key (Authorization: Bearer ...)."))
    if parse_error or (raw and not isinstance(body, dict)):
        raise _Reject(call, OpenAIError(ErrorKind.INVALID_REQUEST, "We could not parse the JSON body of your request."))
    if unknown is not None:
        raise _Reject(call, OpenAIError(ErrorKind.INVALID_REQUEST, str(unknown), "model"))
    call.body = body or {}
    for name in required:
        if call.body.get(name) in (None, "", []):
            raise _Reject(call, OpenAIError(ErrorKind.INVALID_REQUEST, f"Missing required parameter: '{name}'.", name))
    return call


class _Reject(Exception):
    def __init__(self, call: Call, error: OpenAIError) -> None:
        super().__init__(error.message)
        self.call = call
        self.error = error


async def _pre_faults(call: Call) -> web.StreamResponse | None:
    """Faults that strike before the endpoint runs: error statuses, reset, hang."""
    fault = call.fault
    if fault is None:
        return None
    if fault.is_error and fault.error is not None:
        if fault.once and not once_should_fail(fault, call.model, call.request.headers, call.raw, call.ctx.once_seen):
            return None
        if fault.error is ErrorKind.CONTEXT_LENGTH:
            param = "messages" if call.endpoint == "chat.completions" else "input"
            raise context_length_error(call.ctx, call.ctx.settings.context_window + 1, param)
        raise OpenAIError(fault.error)
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
    """Wrap an endpoint handler with intake (auth, JSON, fault parsing, recording) and error mapping."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            call = await _intake(request, ctx, endpoint, required)
        except _Reject as rej:
            return error_response(ctx, rej.call.request_id, rej.error, rej.call.fault)
        try:
            early = await _pre_faults(call)
            return early if early is not None else await handler(call)
        except OpenAIError as err:
            return error_response(ctx, call.request_id, err, call.fault)

    return wrapped


async def send_json(call: Call, payload: Mapping[str, Any]) -> tuple[web.StreamResponse, str]:
    """Send a non-stream body after the latency delay, applying body faults; returns (response, outcome).

    `cut` sends the headers (with content-length) and half the body, then aborts; `stall` sends the
    headers only and waits for the client to leave; `malformed` sends a body that is not JSON.
    """
    delay = call.timing.latency_s
    if call.behaviour is Behaviour.SLOW:
        delay = max(delay, call.timing.slow_s)
    await sleep_if(delay)
    data = dumps(payload).encode()
    behaviour = call.behaviour
    if behaviour is Behaviour.MALFORMED:
        return web.Response(body=b"{not json", content_type="application/json", headers=call.headers()), "malformed"
    if behaviour not in (Behaviour.CUT, Behaviour.STALL):
        return web.Response(body=data, content_type="application/json", headers=call.headers()), "ok"
    resp = web.StreamResponse(status=200, headers=call.headers())
    resp.content_type = "application/json"
    resp.content_length = len(data)
    try:
        await resp.prepare(call.request)
        if behaviour is Behaviour.CUT:
            await resp.write(data[: len(data) // 2])
        else:
            await wait_for_disconnect(call.request, call.ctx.settings.stall_cap_s)
    except ConnectionError:
        pass
    abort_connection(call.request)
    return resp, behaviour.value


def stream_response(call: Call) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers=call.headers())
    resp.content_type = "text/event-stream"
    resp.headers["cache-control"] = "no-cache"
    return resp
