"""Provider-neutral SSE stream driver: timing, the stream faults (cut/stall/malformed/no-done), disconnects."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from gateway.emulators.config import Timing
from gateway.emulators.faults import Behaviour, Fault, abort_connection, sleep_if, wait_for_disconnect

FAULTY_PREFIX_EVENTS = 3  # content events sent before a stall / malformed chunk


@dataclass
class StreamPlan:
    """Pre-encoded events of one stream; the provider module builds it, `run_stream` sends it."""

    preamble: list[bytes] = field(default_factory=list)  # sent at once after the headers
    head: list[bytes] = field(default_factory=list)  # sent right before the first content event
    content: list[tuple[bytes, int]] = field(default_factory=list)  # (event, output tokens it carries)
    tail: list[bytes] = field(default_factory=list)  # terminal events (finish, usage, [DONE])
    malformed: bytes = b"data: {not json\n\n"


@dataclass
class StreamResult:
    """How a stream ended and how many content tokens actually went out."""

    outcome: str
    sent_tokens: int


def faulty_prefix(fault: Fault | None, n_content: int) -> int:
    """How many content events go out before the fault strikes (all of them without a stream fault)."""
    if fault is None or not fault.streams_faultily or fault.behaviour is Behaviour.NO_DONE:
        return n_content
    if fault.behaviour is Behaviour.CUT:
        return max(1, n_content // 2) if n_content else 0
    return min(FAULTY_PREFIX_EVENTS, n_content)


async def run_stream(
    request: web.BaseRequest,
    response: web.StreamResponse,
    plan: StreamPlan,
    fault: Fault | None,
    timing: Timing,
    stall_cap_s: float,
) -> StreamResult:
    """Prepare `response` (chunked), write one event per write and apply the stream fault, if any."""
    response.enable_chunked_encoding()
    sent = 0
    try:
        await response.prepare(request)
        for event in plan.preamble:
            await response.write(event)
        first_delay = (
            max(timing.ttft_s, timing.slow_s) if fault and fault.behaviour is Behaviour.SLOW else timing.ttft_s
        )
        await sleep_if(first_delay)
        for event in plan.head:
            await response.write(event)
        limit = faulty_prefix(fault, len(plan.content))
        for i, (event, tokens) in enumerate(plan.content[:limit]):
            if i:
                await sleep_if(timing.inter_token_s)
            await response.write(event)
            sent += tokens
        behaviour = fault.behaviour if fault else None
        if behaviour is Behaviour.CUT:
            abort_connection(request)
            return StreamResult("cut", sent)
        if behaviour is Behaviour.STALL:
            if not await wait_for_disconnect(request, stall_cap_s):
                abort_connection(request)
            return StreamResult("stall", sent)
        if behaviour is Behaviour.MALFORMED:
            await response.write(plan.malformed)
            await response.write_eof()
            return StreamResult("malformed", sent)
        if behaviour is Behaviour.NO_DONE:
            await response.write_eof()
            return StreamResult("no-done", sent)
        if behaviour is Behaviour.NO_MARKER:  # e.g. OpenAI's `data: [DONE]`, Anthropic's message_stop
            for event in plan.tail[:-1]:
                await response.write(event)
            await response.write_eof()
            return StreamResult("ok", sent)
        for event in plan.tail:
            await response.write(event)
        await response.write_eof()
        return StreamResult("ok", sent)
    except ConnectionError:
        return StreamResult("disconnected", sent)
