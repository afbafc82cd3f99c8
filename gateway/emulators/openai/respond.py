"""Sending a generated answer as one JSON body or as a stream plan, and billing what actually went out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from gateway.emulators.openai.common import Call, send_json, stream_response
from gateway.emulators.openai.generate import Output
from gateway.emulators.streaming import StreamPlan, run_stream


async def respond(
    call: Call, out: Output, stream: bool, payload: Callable[[], Mapping[str, Any]], plan: Callable[[], StreamPlan]
) -> web.StreamResponse:
    """Non-stream: bill the whole answer. Stream: bill the prompt, reasoning and the output tokens sent."""
    filtered = out.finish == "content_filter"
    if not stream:
        resp, outcome = await send_json(call, payload())
        output_tokens = out.completion_tokens
    else:
        resp = stream_response(call)
        result = await run_stream(call.request, resp, plan(), call.fault, call.timing, call.ctx.settings.stall_cap_s)
        outcome, output_tokens = result.outcome, out.reasoning_tokens + result.sent_tokens
    call.bill(
        out.prompt_tokens,
        output_tokens,
        cached=out.cached_tokens,
        reasoning=out.reasoning_tokens,
        stream=stream,
        outcome="content_filter" if filtered and outcome == "ok" else outcome,
    )
    return resp
