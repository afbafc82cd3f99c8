"""Gemini request plumbing: the Gemini `Call`, intake (URL model/method, API key, JSON, faults), the method runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.emulators.call import Call, new_id
from gateway.emulators.config import EmulatorContext
from gateway.emulators.faults import Behaviour, Fault, FaultKind, FaultTable
from gateway.emulators.gemini.wire import (
    PROVIDER,
    GeminiError,
    base_headers,
    error_response,
    fault_error,
    invalid,
    no_key_error,
)
from gateway.emulators.intake import Reject, read_intake, serve

# Gemini-only faults, on top of the shared catalogue (the behaviour is reused, the name tells them apart).
ERROR_MIDSTREAM = Fault("error-midstream", Behaviour.MALFORMED)  # stream: a few chunks, then an error event
PROMPT_BLOCKED = Fault("prompt-blocked", Behaviour.CONTENT_FILTER)  # 200, no candidates, promptFeedback
FAULTS = FaultTable.with_extras(ERROR_MIDSTREAM, PROMPT_BLOCKED)


@dataclass
class GeminiCall(Call):
    """One accepted Gemini request, answered with google.rpc errors."""

    PROVIDER = PROVIDER
    ERROR = GeminiError
    FAULTS = FAULTS

    method: str = ""
    api_version: str = "v1beta"

    def headers(self) -> dict[str, str]:
        return base_headers(self.request_id)

    def error_response(self, err: Exception) -> web.Response:
        assert isinstance(err, GeminiError)
        return error_response(self.request_id, err)

    def fault_error(self, fault: Fault) -> Exception:
        assert fault.error is not None
        return fault_error(fault.error, fault, self.ctx.settings.context_window)

    def early_error(self) -> Exception | None:
        if self.is_fault(ERROR_MIDSTREAM) and self.endpoint != "streamGenerateContent":
            return GeminiError(FaultKind.OVERLOADED)  # no stream to break: the request fails as a whole
        return None


Handler = Callable[[GeminiCall], Awaitable[web.StreamResponse]]


async def _accept(request: web.Request, ctx: EmulatorContext, endpoint: str, model: str, method: str) -> GeminiCall:
    got = await read_intake(request, ctx, new_id("req_"), FAULTS, model)
    got.record(ctx, request, PROVIDER, path=request.path_qs)
    call = got.call(GeminiCall, request, ctx, endpoint, method=method)
    call.api_version = request.match_info.get("version", "v1beta")
    key = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
    if not key.strip():
        raise Reject(call, no_key_error())
    if not got.is_object:
        raise Reject(call, invalid("Invalid JSON payload received. Expected a JSON object."))
    if got.unknown is not None:
        raise Reject(call, invalid(str(got.unknown), "model"))
    call.body = got.body or {}
    return call


def not_found(path: str) -> GeminiError:
    return GeminiError(FaultKind.NOT_FOUND, f"The requested URL {path} was not found on this server.")


async def run(
    request: web.Request, ctx: EmulatorContext, endpoint: str, model: str, method: str, handler: Handler
) -> web.StreamResponse:
    """Intake, pre-response faults, the handler, and the google.rpc error mapping."""
    return await serve(_accept(request, ctx, endpoint, model, method), handler)
