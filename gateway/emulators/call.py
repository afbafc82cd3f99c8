"""The provider-neutral accepted call: its context, billing, JSON encoding and the non-stream / stream responses."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from gateway.emulators.config import EmulatorContext, Timing
from gateway.emulators.faults import (
    SHARED_FAULTS,
    Behaviour,
    Fault,
    FaultTable,
    abort_connection,
    sleep_if,
    wait_for_disconnect,
)
from gateway.emulators.recorder import BillingRecord


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


@dataclass
class Call:
    """One accepted request; each provider subclasses it with its headers, error rendering and fault errors."""

    PROVIDER: ClassVar[str] = ""
    ERROR: ClassVar[type[Exception]] = Exception  # the provider's handler error, rendered by `error_response`
    FAULTS: ClassVar[FaultTable] = SHARED_FAULTS
    BILLS_CACHE_WRITES: ClassVar[bool] = False

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

    def is_fault(self, fault: Fault) -> bool:
        return self.fault is not None and self.fault.name == fault.name

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def error_response(self, err: Exception) -> web.Response:
        raise NotImplementedError

    def fault_error(self, fault: Fault) -> Exception:
        """The error an error-class fault (429, 500-once, ...) raises before the handler runs."""
        raise NotImplementedError

    def early_error(self) -> Exception | None:
        """A provider-only fault that fails the request before the handler (e.g. a mid-stream fault, no stream)."""
        return None

    def bill(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cached: int = 0,
        reasoning: int = 0,
        cache_write: int | None = None,
        stream: bool = False,
        outcome: str = "ok",
    ) -> None:
        if cache_write is None and self.BILLS_CACHE_WRITES:
            cache_write = 0
        record = BillingRecord(
            self.PROVIDER,
            self.model,
            self.endpoint,
            self.request_id,
            input_tokens,
            output_tokens,
            cached,
            reasoning,
            stream,
            outcome,
            cache_write_input_tokens=cache_write,
        )
        self.ctx.recorder.record_billing(record)


async def send_json(
    call: Call, payload: Mapping[str, Any], extra_headers: Mapping[str, str] | None = None
) -> tuple[web.StreamResponse, str]:
    """Send a non-stream body after the latency delay, applying body faults; returns (response, outcome).

    `cut` sends the headers (with content-length) and half the body, then aborts; `stall` sends the
    headers only and waits for the client to leave; `malformed` sends a body that is not JSON.
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


def stream_response(call: Call) -> web.StreamResponse:
    """The 200 `text/event-stream` response of an SSE stream (prepared by `run_stream`)."""
    resp = web.StreamResponse(status=200, headers=call.headers())
    resp.content_type = "text/event-stream"
    resp.headers["cache-control"] = "no-cache"
    return resp
