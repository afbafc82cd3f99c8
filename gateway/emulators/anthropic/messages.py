"""`POST /v1/messages` (JSON body and typed SSE stream), `/v1/messages/count_tokens`, `/v1/models`, the 404."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.emulators.anthropic.generate import Block, Output, generate, parse_params, parse_prompt
from gateway.emulators.anthropic.wire import (
    OVERLOADED_MIDSTREAM,
    AnthropicCall,
    AnthropicError,
    error_body,
    event,
    invalid,
)
from gateway.emulators.call import new_id, send_json, stream_response
from gateway.emulators.faults import FaultKind
from gateway.emulators.streaming import StreamPlan, run_stream
from gateway.emulators.text import deltas_of

MODELS = (
    "claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-3-5-haiku-latest", "claude-sonnet-4-5-thinking",
)  # fmt: skip
MODELS_CREATED_AT = "2025-01-01T00:00:00Z"
REFUSAL = {"type": "refusal", "category": None, "explanation": None}


def usage(out: Output, output_tokens: int | None = None) -> dict[str, Any]:
    """Anthropic usage: `input_tokens` excludes the cache reads and writes."""
    write_5m, write_1h = (out.cache_write, 0) if out.cache_ttl == "5m" else (0, out.cache_write)
    u: dict[str, Any] = {
        "input_tokens": out.input_tokens,
        "cache_creation_input_tokens": out.cache_write,
        "cache_read_input_tokens": out.cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
        "output_tokens": out.output_tokens if output_tokens is None else output_tokens,
        "service_tier": "standard",
    }
    if out.thinking_tokens:
        u["output_tokens_details"] = {"thinking_tokens": out.thinking_tokens}
    return u


def message(call: AnthropicCall, out: Output, msg_id: str, final: bool) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [b.wire() for b in out.blocks] if final else [],
        "stop_reason": out.stop_reason if final else None,
        "stop_sequence": out.stop_sequence if final else None,
        "usage": usage(out) if final else usage(out, output_tokens=1),
    }
    if final and out.stop_reason == "refusal":
        msg["stop_details"] = REFUSAL
    return msg


def _start_block(block: Block) -> dict[str, Any]:
    if block.kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    if block.kind == "tool_use":
        return {"type": "tool_use", "id": block.tool_id, "name": block.name, "input": {}}
    return {"type": "text", "text": ""}


def _delta(block: Block, piece: str) -> dict[str, Any]:
    if block.kind == "thinking":
        return {"type": "thinking_delta", "thinking": piece}
    if block.kind == "tool_use":
        return {"type": "input_json_delta", "partial_json": piece}
    return {"type": "text_delta", "text": piece}


def stream_plan(call: AnthropicCall, out: Output, msg_id: str) -> StreamPlan:
    """message_start, content_block_start, ping, deltas (several tokens each, as the real API sends them), block
    stops, message_delta/stop.

    Block boundaries ride with the first delta of the next block, so every content write carries tokens;
    a tool_use block's name counts one token, on its first `input_json_delta` write.
    """
    plan = StreamPlan(malformed=b"event: content_block_delta\ndata: {not json\n\n")
    if call.fault is OVERLOADED_MIDSTREAM:
        plan.malformed = event("error", error_body(FaultKind.OVERLOADED, "Overloaded"))
    plan.preamble = [event("message_start", {"message": message(call, out, msg_id, final=False)})]
    blocks = out.blocks
    plan.head = [event("content_block_start", {"index": 0, "content_block": _start_block(blocks[0])}), event("ping")]
    for i, block in enumerate(blocks):
        groups = deltas_of(block.pieces) if block.kind in ("text", "thinking") else [[p] for p in block.pieces]
        writes: list[list[Any]] = [  # [data, tokens] per write, edited in place below
            [event("content_block_delta", {"index": i, "delta": _delta(block, "".join(g))}), len(g)] for g in groups
        ]
        if block.kind == "thinking" and writes:
            sig = {"index": i, "delta": {"type": "signature_delta", "signature": block.signature}}
            writes[-1][0] += event("content_block_delta", sig)
        if i:
            boundary = event("content_block_stop", {"index": i - 1})
            boundary += event("content_block_start", {"index": i, "content_block": _start_block(block)})
            writes = writes or [[b"", 0]]
            writes[0][0] = boundary + writes[0][0]
        if block.kind == "tool_use":
            writes[0][1] += 1
        plan.content += [(data, tokens) for data, tokens in writes]
    delta: dict[str, Any] = {"stop_reason": out.stop_reason, "stop_sequence": out.stop_sequence}
    if out.stop_reason == "refusal":
        delta["stop_details"] = REFUSAL
    end_usage: dict[str, Any] = {"output_tokens": out.output_tokens}
    if out.thinking_tokens:
        end_usage["output_tokens_details"] = {"thinking_tokens": out.thinking_tokens}
    plan.tail = [
        event("content_block_stop", {"index": len(blocks) - 1}),
        event("message_delta", {"delta": delta, "usage": end_usage}),
        event("message_stop"),
    ]
    return plan


async def create_message(call: AnthropicCall) -> web.StreamResponse:
    body = call.body
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("stream: Input should be a valid boolean")
    params = parse_params(body, call.model)
    prompt = parse_prompt(body, call.model)
    if call.fault is OVERLOADED_MIDSTREAM and not stream:
        raise AnthropicError(FaultKind.OVERLOADED)  # without a stream there is no "midstream": a plain 529
    out = generate(call, prompt, params)
    msg_id = new_id("msg_")
    if not stream:
        resp, outcome = await send_json(call, message(call, out, msg_id, final=True))
        output_tokens, thinking = out.output_tokens, out.thinking_tokens
    else:
        resp = stream_response(call)
        plan = stream_plan(call, out, msg_id)
        result = await run_stream(call.request, resp, plan, call.fault, call.timing, call.ctx.settings.stall_cap_s)
        outcome, output_tokens = result.outcome, result.sent_tokens
        thinking = min(out.thinking_tokens, output_tokens)  # thinking is streamed first
        if call.fault is OVERLOADED_MIDSTREAM and outcome == "malformed":
            outcome = OVERLOADED_MIDSTREAM.name
    if out.stop_reason == "refusal" and outcome == "ok":
        outcome = "refusal"
    call.bill(
        out.total_input,
        output_tokens,
        cached=out.cache_read,
        reasoning=thinking,
        stream=stream,
        outcome=outcome,
        cache_write=out.cache_write,
    )
    return resp


async def count_tokens(call: AnthropicCall) -> web.StreamResponse:
    """The whole prompt (what /messages reports as input + cache creation + cache read); never billed."""
    prompt = parse_prompt(call.body, call.model)
    return web.json_response({"input_tokens": prompt.tokens}, headers=call.headers())


def _model(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": MODELS_CREATED_AT}


async def list_models(call: AnthropicCall) -> web.StreamResponse:
    data = [_model(m) for m in MODELS]
    page = {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
    return web.json_response(page, headers=call.headers())


async def get_model(call: AnthropicCall) -> web.StreamResponse:
    return web.json_response(_model(call.request.match_info["model_id"]), headers=call.headers())


async def not_found(call: AnthropicCall) -> web.StreamResponse:
    raise AnthropicError(FaultKind.NOT_FOUND, f"Not found: {call.request.method} {call.request.path}")
