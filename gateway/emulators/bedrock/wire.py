"""Bedrock wire vocabulary: rest-json errors, response headers, ids and the binary AWS event-stream encoder."""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.emulators.call import dumps
from gateway.emulators.faults import FaultKind

PROVIDER = "bedrock"
EVENTSTREAM = "application/vnd.amazon.eventstream"
HDR_ERROR_TYPE = "x-amzn-ErrorType"
HDR_REQUEST_ID = "x-amzn-RequestId"

# kind -> (HTTP status, x-amzn-ErrorType, default message); statuses are botocore's service model's.
ERRORS: Mapping[FaultKind, tuple[int, str, str]] = {
    FaultKind.INVALID_REQUEST: (400, "ValidationException", "Malformed input request, please reformat your input."),
    FaultKind.AUTH: (403, "AccessDeniedException", "You don't have access to the model with the specified model ID."),
    FaultKind.NOT_FOUND: (404, "ResourceNotFoundException", "The requested resource could not be found."),
    FaultKind.RATE_LIMIT: (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    FaultKind.QUOTA: (
        400,
        "ServiceQuotaExceededException",
        "Your request exceeded the service quota for your account. Request a quota increase and try again.",
    ),
    FaultKind.SERVER: (
        500,
        "InternalServerException",
        "The system encountered an unexpected error during processing. Try your request again.",
    ),
    FaultKind.OVERLOADED: (503, "ServiceUnavailableException", "Bedrock is unable to process your request."),
    FaultKind.CONTEXT_LENGTH: (400, "ValidationException", "Input is too long for requested model."),
}


class BedrockError(Exception):
    """Raised inside a handler; the route wrapper turns it into status + `x-amzn-ErrorType` + `{"message"}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def of(cls, kind: FaultKind, message: str | None = None) -> BedrockError:
        status, code, default = ERRORS[kind]
        return cls(status, code, message or default)


def validation(message: str) -> BedrockError:
    return BedrockError.of(FaultKind.INVALID_REQUEST, message)


def new_request_id() -> str:
    return str(uuid.uuid4())


def base_headers(request_id: str) -> dict[str, str]:
    return {HDR_REQUEST_ID: request_id}


def error_response(request_id: str, err: BedrockError) -> web.Response:
    headers = base_headers(request_id)
    headers[HDR_ERROR_TYPE] = err.code  # no Retry-After: Bedrock never sends one, not even on a 429
    return web.Response(
        status=err.status, text=dumps({"message": err.message}), content_type="application/json", headers=headers
    )


# ---------------------------------------------------------------- event stream (vnd.amazon.eventstream)

_STRING = 7


def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return struct.pack("!B", len(n)) + n + struct.pack("!BH", _STRING, len(v)) + v


def frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total, headers length, prelude CRC32), headers, payload, message CRC32."""
    hb = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack("!II", 16 + len(hb) + len(payload), len(hb))
    message = prelude + struct.pack("!I", zlib.crc32(prelude)) + hb + payload
    return message + struct.pack("!I", zlib.crc32(message))


def event(event_type: str, body: Any) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, dumps(body).encode())


def exception(exception_type: str, message: str) -> bytes:
    """A modelled stream exception; `exception_type` is the camelCase union member, e.g. `throttlingException`."""
    headers = {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    return frame(headers, dumps({"message": message}).encode())


def corrupt(data: bytes) -> bytes:
    """The same frame with a wrong message CRC (the decoder raises a checksum mismatch)."""
    (crc,) = struct.unpack("!I", data[-4:])
    return data[:-4] + struct.pack("!I", crc ^ 0xFFFFFFFF)
