"""Bedrock request plumbing: SigV4 presence + region, modelId unquoting, faults, recording, JSON sending."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from gateway.emulators.bedrock.wire import (
    PROVIDER,
    BedrockError,
    base_headers,
    dumps,
    error_response,
    new_request_id,
    validation,
)
from gateway.emulators.config import EmulatorContext, Timing, resolve_timing
from gateway.emulators.faults import (
    CATALOGUE,
    HDR_FAULT,
    Behaviour,
    ErrorKind,
    Fault,
    abort_connection,
    once_should_fail,
    sleep_if,
    split_model,
    wait_for_disconnect,
)
from gateway.emulators.recorder import BillingRecord, RequestRecord

# Bedrock-only faults, on top of the shared catalogue. The two mid-stream ones reuse the MALFORMED stream
# path (a few deltas, then one special frame, then a clean end) with an exception frame as that frame.
GUARDRAIL = Fault("guardrail", Behaviour.CONTENT_FILTER)
THROTTLE_MIDSTREAM = Fault("throttle-midstream", Behaviour.MALFORMED)
MODEL_STREAM_ERROR = Fault("model-stream-error", Behaviour.MALFORMED)
EXTRA_FAULTS: Mapping[str, Fault] = {f.name: f for f in (GUARDRAIL, THROTTLE_MIDSTREAM, MODEL_STREAM_ERROR)}
MIDSTREAM_FAULTS = (THROTTLE_MIDSTREAM.name, MODEL_STREAM_ERROR.name)

_CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request")
SIGV4 = "AWS4-HMAC-SHA256"


@dataclass
class BedrockRequestRecord(RequestRecord):
    """A request record plus the SigV4 credential scope (the region the call was signed for)."""

    region: str | None = None
    model_id: str | None = None  # the modelId as unquoted from the path (fault suffix included)


@dataclass
class BedrockBillingRecord(BillingRecord):
    """A billing record plus the prompt-cache write tokens (Bedrock bills them separately)."""

    cache_write_input_tokens: int = 0


@dataclass
class Call:
    """One accepted Bedrock request."""

    request: web.Request
    ctx: EmulatorContext
    endpoint: str
    request_id: str
    raw: bytes
    body: dict[str, Any]
    model: str
    fault: Fault | None
    timing: Timing
    region: str | None

    @property
    def behaviour(self) -> Behaviour | None:
        return self.fault.behaviour if self.fault else None

    def headers(self) -> dict[str, str]:
        return base_headers(self.request_id)

    def bill(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read: int = 0,
        cache_write: int = 0,
        stream: bool = False,
        outcome: str = "ok",
    ) -> None:
        record = BedrockBillingRecord(
            PROVIDER,
            self.model,
            self.endpoint,
            self.request_id,
            input_tokens,
            output_tokens,
            cached_input_tokens=cache_read,
            stream=stream,
            outcome=outcome,
            cache_write_input_tokens=cache_write,
        )
        self.ctx.recorder.record_billing(record)


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


class _Reject(Exception):
    def __init__(self, call: Call, error: BedrockError) -> None:
        super().__init__(error.message)
        self.call = call
        self.error = error


def parse_bedrock_fault(model: str, headers: Mapping[str, str]) -> tuple[str, Fault | None, str | None]:
    """(base model, fault, unknown fault name): the `-fault-<name>` suffix wins over `x-emulator-fault`."""
    base, name = split_model(model)
    if name is None:
        name = headers.get(HDR_FAULT) or None
    if name is None:
        return base, None, None
    key = name.strip().lower()
    fault = EXTRA_FAULTS.get(key) or CATALOGUE.get(key)
    return base, fault, None if fault else name


def signing_region(authorization: str) -> str | None:
    match = _CREDENTIAL_RE.search(authorization)
    return match.group(3) if match else None


def _decode_body(raw: bytes) -> tuple[Any, bool]:
    """(parsed JSON or a text stand-in for the record, whether it parsed)."""
    if not raw:
        return None, True
    try:
        return json.loads(raw), True
    except ValueError:
        return raw.decode("utf-8", "replace"), False


async def _intake(request: web.Request, ctx: EmulatorContext, endpoint: str) -> Call:
    request_id = new_request_id()
    raw = await request.read() if request.can_read_body else b""
    body, parsed = _decode_body(raw)
    model_id = unquote(request.match_info.get("model_id", ""))
    model, fault, unknown = parse_bedrock_fault(model_id, request.headers)
    headers = {k.lower(): v for k, v in request.headers.items()}
    auth = request.headers.get("authorization", "")
    region = signing_region(auth)
    if ctx.settings.record_requests:
        record = BedrockRequestRecord(
            PROVIDER,
            request.method,
            request.path,
            headers,
            body,
            fault.name if fault else unknown,
            request_id,
            region=region,
            model_id=model_id or None,
        )
        ctx.recorder.record_request(record)
    call = Call(
        request, ctx, endpoint, request_id, raw, {}, model, fault, resolve_timing(ctx.settings, headers), region
    )
    if not auth.startswith(SIGV4 + " ") or region is None:
        # What AWS answers for a request it cannot authenticate (an IAM *deny* is AccessDeniedException).
        raise _Reject(
            call,
            BedrockError(403, "UnrecognizedClientException", "The security token included in the request is invalid."),
        )
    if unknown is not None:
        known = ", ".join(sorted([*CATALOGUE, *EXTRA_FAULTS]))
        raise _Reject(call, validation(f"Unknown emulator fault '{unknown}'. Known faults: {known}."))
    if not parsed or (raw and not isinstance(body, dict)):
        raise _Reject(call, validation("Malformed input request, please reformat your input and try again."))
    call.body = body or {}
    return call


async def _pre_faults(call: Call, stream: bool) -> web.StreamResponse | None:
    """Faults that strike before the endpoint runs: error statuses, reset, hang (none of them is billed)."""
    fault = call.fault
    if fault is None:
        return None
    if fault.is_error and fault.error is not None:
        if fault.once and not once_should_fail(fault, call.model, call.request.headers, call.raw, call.ctx.once_seen):
            return None
        raise BedrockError.of(fault.error)
    if not stream and fault.name == THROTTLE_MIDSTREAM.name:
        raise BedrockError.of(ErrorKind.RATE_LIMIT)  # no stream to break: the plain throttling error
    if not stream and fault.name == MODEL_STREAM_ERROR.name:
        raise BedrockError(424, "ModelErrorException", "The model encountered an error processing the request.")
    if fault.behaviour is Behaviour.RESET:
        abort_connection(call.request)
        return web.Response()
    if fault.behaviour is Behaviour.HANG:
        await wait_for_disconnect(call.request, call.ctx.settings.hang_cap_s)
        abort_connection(call.request)
        return web.Response()
    return None


def route(
    ctx: EmulatorContext, endpoint: str, handler: Handler, stream: bool = False
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap a handler with intake (auth, JSON, fault parsing, recording) and Bedrock error mapping."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            call = await _intake(request, ctx, endpoint)
        except _Reject as rej:
            return error_response(rej.call.request_id, rej.error)
        try:
            early = await _pre_faults(call, stream)
            return early if early is not None else await handler(call)
        except BedrockError as err:
            return error_response(call.request_id, err)

    return wrapped


async def send_json(
    call: Call, payload: Mapping[str, Any], extra_headers: Mapping[str, str] | None = None
) -> tuple[web.StreamResponse, str]:
    """Send a JSON body after the latency delay, applying the body faults; returns (response, outcome).

    `cut`: headers (with content-length) and half the body, then abort; `stall`: headers only, then wait for
    the client to leave; `malformed`: a body that is not JSON.
    """
    delay = call.timing.latency_s
    if call.behaviour is Behaviour.SLOW:
        delay = max(delay, call.timing.slow_s)
    await sleep_if(delay)
    headers = {**call.headers(), **(extra_headers or {})}
    data = dumps(payload).encode()
    behaviour = call.behaviour
    if behaviour is Behaviour.MALFORMED:
        return web.Response(body=b"{not json", content_type="application/json", headers=headers), "malformed"
    if behaviour not in (Behaviour.CUT, Behaviour.STALL):
        return web.Response(body=data, content_type="application/json", headers=headers), "ok"
    resp = web.StreamResponse(status=200, headers=headers)
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


async def unknown_operation(call: Call) -> web.StreamResponse:
    raise BedrockError(
        404, "UnknownOperationException", f"Unknown operation {call.request.method} {call.request.path}."
    )
