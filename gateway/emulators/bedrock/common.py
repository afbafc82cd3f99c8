"""Bedrock request plumbing: the Bedrock `Call`, intake (SigV4 presence + region, modelId unquoting), routes."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from urllib.parse import unquote

from aiohttp import web

from gateway.emulators.bedrock.wire import (
    PROVIDER,
    BedrockError,
    base_headers,
    error_response,
    new_request_id,
    validation,
)
from gateway.emulators.call import Call as BaseCall
from gateway.emulators.call import send_json
from gateway.emulators.config import EmulatorContext
from gateway.emulators.faults import Behaviour, Fault, FaultKind, FaultTable
from gateway.emulators.intake import Endpoint, Reject, read_intake
from gateway.emulators.intake import route as intake_route
from gateway.emulators.recorder import RequestRecord

__all__ = ["GUARDRAIL", "MODEL_STREAM_ERROR", "THROTTLE_MIDSTREAM", "Call", "route", "send_json", "unknown_operation"]

STREAM_ENDPOINT = "converse-stream"
# Bedrock-only faults, on top of the shared catalogue. The two mid-stream ones reuse the MALFORMED stream
# path (a few deltas, then one special frame, then a clean end) with an exception frame as that frame.
GUARDRAIL = Fault("guardrail", Behaviour.CONTENT_FILTER)
THROTTLE_MIDSTREAM = Fault("throttle-midstream", Behaviour.MALFORMED)
MODEL_STREAM_ERROR = Fault("model-stream-error", Behaviour.MALFORMED)
FAULTS = FaultTable.with_extras(GUARDRAIL, THROTTLE_MIDSTREAM, MODEL_STREAM_ERROR)
MIDSTREAM_FAULTS = (THROTTLE_MIDSTREAM.name, MODEL_STREAM_ERROR.name)

_CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request")
SIGV4 = "AWS4-HMAC-SHA256"


@dataclass
class BedrockRequestRecord(RequestRecord):
    """A request record plus the SigV4 credential scope (the region the call was signed for)."""

    region: str | None = None
    model_id: str | None = None  # the modelId as unquoted from the path (fault suffix included)


@dataclass
class Call(BaseCall):
    """One accepted Bedrock request: rest-json errors, the SigV4 signing region; cache writes are billed apart."""

    PROVIDER = PROVIDER
    ERROR = BedrockError
    FAULTS = FAULTS
    BILLS_CACHE_WRITES = True

    region: str | None = None

    def headers(self) -> dict[str, str]:
        return base_headers(self.request_id)

    def error_response(self, err: Exception) -> web.Response:
        assert isinstance(err, BedrockError)
        return error_response(self.request_id, err)

    def fault_error(self, fault: Fault) -> Exception:
        assert fault.error is not None
        return BedrockError.of(fault.error)

    def early_error(self) -> Exception | None:
        if self.endpoint == STREAM_ENDPOINT:
            return None
        if self.is_fault(THROTTLE_MIDSTREAM):
            return BedrockError.of(FaultKind.RATE_LIMIT)  # no stream to break: the plain throttling error
        if self.is_fault(MODEL_STREAM_ERROR):
            return BedrockError(424, "ModelErrorException", "The model encountered an error processing the request.")
        return None


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


def signing_region(authorization: str) -> str | None:
    match = _CREDENTIAL_RE.search(authorization)
    return match.group(3) if match else None


async def _accept(request: web.Request, ctx: EmulatorContext, endpoint: str) -> Call:
    model_id = unquote(request.match_info.get("model_id", ""))
    got = await read_intake(request, ctx, new_request_id(), FAULTS, model_id)
    auth = request.headers.get("authorization", "")
    region = signing_region(auth)
    body = got.body if got.parsed else got.raw.decode("utf-8", "replace")  # a text stand-in for the record
    got.record(ctx, request, PROVIDER, BedrockRequestRecord, body=body, region=region, model_id=model_id or None)
    call = got.call(Call, request, ctx, endpoint, region=region)
    if not auth.startswith(SIGV4 + " ") or region is None:
        # What AWS answers for a request it cannot authenticate (an IAM *deny* is AccessDeniedException).
        raise Reject(
            call,
            BedrockError(403, "UnrecognizedClientException", "The security token included in the request is invalid."),
        )
    if got.unknown is not None:
        raise Reject(call, validation(str(got.unknown)))
    if not got.is_object:
        raise Reject(call, validation("Malformed input request, please reformat your input and try again."))
    call.body = got.body or {}
    return call


def route(ctx: EmulatorContext, endpoint: str, handler: Handler) -> Endpoint:
    """Wrap a handler with intake (auth, JSON, fault parsing, recording) and Bedrock error mapping."""
    return intake_route(partial(_accept, ctx=ctx, endpoint=endpoint), handler)


async def unknown_operation(call: Call) -> web.StreamResponse:
    raise BedrockError(
        404, "UnknownOperationException", f"Unknown operation {call.request.method} {call.request.path}."
    )
