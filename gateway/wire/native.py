"""The native streaming API's wire format: each typed stream event as one `event:`/`data:` SSE frame."""

from __future__ import annotations

from gateway.schema import StreamEvent

HEARTBEAT = b'event: heartbeat\ndata: {"type":"heartbeat"}\n\n'


def encode_event(event: StreamEvent) -> bytes:
    if event.type == "heartbeat":
        return HEARTBEAT
    return b"event: " + event.type.encode() + b"\ndata: " + event.model_dump_json(exclude_none=True).encode() + b"\n\n"
