"""Classifying botocore / urllib3 failures of bedrock-runtime into the gateway's ErrorKind."""

from __future__ import annotations

from botocore.eventstream import ParserError  # a frame with a bad CRC or length (ChecksumMismatch)
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    EventStreamError,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError
from urllib3.exceptions import ProtocolError
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeout

from gateway.schema import ErrorKind, GatewayError, Usage
from gateway.schema.errors import BROKE_MID_STREAM

_CODES = {
    "throttlingexception": ErrorKind.RATE_LIMITED,
    "servicequotaexceededexception": ErrorKind.QUOTA_EXCEEDED,
    "modelnotreadyexception": ErrorKind.OVERLOADED,
    "serviceunavailableexception": ErrorKind.OVERLOADED,
    "internalserverexception": ErrorKind.SERVER,
    "modelerrorexception": ErrorKind.SERVER,
    "modelstreamerrorexception": ErrorKind.SERVER,
    "modeltimeoutexception": ErrorKind.TIMEOUT,
    "validationexception": ErrorKind.BAD_REQUEST,
    "accessdeniedexception": ErrorKind.AUTH,
    "unrecognizedclientexception": ErrorKind.AUTH,
    "expiredtokenexception": ErrorKind.AUTH,
    "resourcenotfoundexception": ErrorKind.NOT_FOUND,
}


def map_bedrock_error(
    exc: BaseException, *, provider: str, model: str, started: bool = False, usage: Usage | None = None
) -> GatewayError:
    """Classify `exc`; `started` means content had streamed, so a broken stream is truncated."""
    if isinstance(exc, GatewayError):
        return exc
    code = None
    if isinstance(exc, ClientError | EventStreamError):  # EventStreamError: a mid-stream exception frame
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        kind = _CODES.get(code.lower(), ErrorKind.SERVER)
        if kind is ErrorKind.BAD_REQUEST and "too long" in message.lower():
            kind = ErrorKind.CONTEXT_LENGTH
        text = f"{provider} returned {code}: {message}"
    elif isinstance(exc, ReadTimeoutError | Urllib3ReadTimeout | TimeoutError):
        kind, text = ErrorKind.TIMEOUT, "upstream timed out"
    elif isinstance(exc, ConnectionClosedError | EndpointConnectionError | ProtocolError | ConnectionError):
        kind, text = ErrorKind.CONNECTION, f"upstream connection failed: {type(exc).__name__}: {exc}"
    elif isinstance(exc, ParserError | ResponseParserError | ValueError | KeyError):
        kind, text = ErrorKind.INVALID_RESPONSE, f"{provider} sent a malformed response: {type(exc).__name__}: {exc}"
    else:
        kind, text = ErrorKind.INVALID_RESPONSE, f"unexpected error from {provider}: {type(exc).__name__}: {exc}"
    if started and kind in BROKE_MID_STREAM:
        kind, text = ErrorKind.TRUNCATED_STREAM, f"stream broke after it started: {text}"
    return GatewayError(kind, text, provider=provider, model=model, usage=usage, provider_code=code)
