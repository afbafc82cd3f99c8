"""OpenAI request plumbing: the OpenAI `Call` (headers, errors), intake checks (Bearer key, required fields), routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from aiohttp import web

from gateway.emulators.call import Call as BaseCall
from gateway.emulators.call import send_json, stream_response
from gateway.emulators.config import EmulatorContext
from gateway.emulators.faults import Fault, FaultKind
from gateway.emulators.intake import Endpoint, Reject, read_intake
from gateway.emulators.intake import route as intake_route
from gateway.emulators.openai.wire import (
    PROVIDER,
    OpenAIError,
    base_headers,
    context_length_error,
    error_response,
    new_id,
)

__all__ = ["Call", "Handler", "route", "send_json", "stream_response"]


@dataclass
class Call(BaseCall):
    """One accepted OpenAI request."""

    PROVIDER = PROVIDER
    ERROR = OpenAIError

    def headers(self) -> dict[str, str]:
        return base_headers(self.ctx, self.request_id)

    def error_response(self, err: Exception) -> web.Response:
        assert isinstance(err, OpenAIError)
        return error_response(self.ctx, self.request_id, err, self.fault)

    def fault_error(self, fault: Fault) -> Exception:
        if fault.error is FaultKind.CONTEXT_LENGTH:
            param = "messages" if self.endpoint == "chat.completions" else "input"
            return context_length_error(self.ctx, self.ctx.settings.context_window + 1, param)
        assert fault.error is not None
        return OpenAIError(fault.error)


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


async def _accept(request: web.Request, ctx: EmulatorContext, endpoint: str, required: tuple[str, ...]) -> Call:
    got = await read_intake(request, ctx, new_id("req_"), Call.FAULTS)
    got.record(ctx, request, PROVIDER)
    call = got.call(Call, request, ctx, endpoint)
    auth = request.headers.get("authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        raise Reject(call, OpenAIError(FaultKind.AUTH, "You didn't provide an API key (Authorization: Bearer ...)."))
    if ctx.settings.api_keys and auth[7:].strip() not in ctx.settings.api_keys:
        raise Reject(call, OpenAIError(FaultKind.AUTH))  # 401 invalid_api_key
    if not got.is_object:
        raise Reject(call, OpenAIError(FaultKind.INVALID_REQUEST, "We could not parse the JSON body of your request."))
    if got.unknown is not None:
        raise Reject(call, OpenAIError(FaultKind.INVALID_REQUEST, str(got.unknown), "model"))
    call.body = got.body or {}
    for name in required:
        if call.body.get(name) in (None, "", []):
            raise Reject(call, OpenAIError(FaultKind.INVALID_REQUEST, f"Missing required parameter: '{name}'.", name))
    return call


def route(ctx: EmulatorContext, endpoint: str, handler: Handler, required: tuple[str, ...] = ()) -> Endpoint:
    """Wrap an endpoint handler with intake (auth, JSON, fault parsing, recording) and error mapping."""
    return intake_route(partial(_accept, ctx=ctx, endpoint=endpoint, required=required), handler)
