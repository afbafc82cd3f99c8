"""`POST /model/{modelId}/converse` and `/converse-stream`: parsing, the emulated model, JSON and event stream."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.emulators.bedrock import wire
from gateway.emulators.bedrock.common import GUARDRAIL, MODEL_STREAM_ERROR, THROTTLE_MIDSTREAM, Call, send_json
from gateway.emulators.bedrock.features import check_features
from gateway.emulators.bedrock.wire import BedrockError, validation
from gateway.emulators.faults import Behaviour, FaultKind
from gateway.emulators.openai.common import Call as OpenAICall
from gateway.emulators.openai.generate import Prompt, Request, Tool, ToolCall, generate
from gateway.emulators.openai.wire import OpenAIError
from gateway.emulators.streaming import StreamPlan, run_stream
from gateway.emulators.text import IMAGE_TOKENS, count_tokens, deltas_of, split_tokens, truncate_at_stop

GUARDRAIL_MESSAGE = "Sorry, the model cannot answer this question."
MEDIA_BLOCKS = ("image", "document", "video", "audio")
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass
class Conversation:
    """A Converse request reduced to what the emulated model needs."""

    prompt: Prompt
    req: Request
    cache_prefix: tuple[int, str] | None = None  # (tokens, text) of the system prompt before its cachePoint
    guardrail: Mapping[str, Any] | None = None


@dataclass
class Answer:
    """The generated reply: text pieces or tool calls, stop reason and usage."""

    pieces: list[str]
    tool_calls: list[ToolCall]
    stop_reason: str
    input_tokens: int  # uncached prompt tokens (Bedrock's `inputTokens`)
    cache_read: int
    cache_write: int
    cached: bool  # whether the request had a cachePoint (the usage then carries both cache fields)
    guardrail_trace: dict[str, Any] | None = None
    piece_tokens: int = 1  # tokens per text piece (0 for the guardrail's canned message)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def output_tokens(self) -> int:
        return self.piece_tokens * len(self.pieces) + sum(c.tokens for c in self.tool_calls)

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_read + self.cache_write

    def usage(self) -> dict[str, int]:
        usage = {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "totalTokens": self.prompt_tokens + self.output_tokens,
        }
        if self.cached:
            usage["cacheReadInputTokens"] = self.cache_read
            usage["cacheWriteInputTokens"] = self.cache_write
        return usage


# ---------------------------------------------------------------- request parsing


def _list(body: Mapping[str, Any], key: str, required: bool = False) -> list[Any]:
    value = body.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list) or (required and not value):
        raise validation(f"Malformed input request: '{key}' must be a non-empty list, please reformat your input.")
    return value


def _block_text(block: Mapping[str, Any]) -> str:
    guard = block.get("guardContent")
    if isinstance(guard, Mapping):
        text = guard.get("text")
        return str(text.get("text", "")) if isinstance(text, Mapping) else ""
    text = block.get("text")
    return text if isinstance(text, str) else ""


def _check_image(block: Mapping[str, Any]) -> None:
    image = block.get("image")
    source = image.get("source") if isinstance(image, Mapping) else None
    data = source.get("bytes") if isinstance(source, Mapping) else None
    if isinstance(source, Mapping) and "s3Location" in source:
        return
    try:
        ok = isinstance(data, str) and bool(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise validation("The provided image must have base64-encoded bytes in 'image.source.bytes'.")


def _tool_result_text(result: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for item in result.get("content") or []:
        if not isinstance(item, Mapping):
            continue
        if "json" in item:
            parts.append(json.dumps(item["json"]))
        elif isinstance(item.get("text"), str):
            parts.append(item["text"])
    return " ".join(parts)


def system_prompt(blocks: list[Any]) -> tuple[int, tuple[int, str] | None]:
    """(tokens, cacheable prefix): the prefix is the system text before the last `cachePoint` block."""
    tokens = 0
    texts: list[str] = []
    prefix: tuple[int, str] | None = None
    for block in blocks:
        if not isinstance(block, Mapping):
            raise validation("Malformed input request: each 'system' item must be an object.")
        if "cachePoint" in block:
            prefix = (tokens, "\n".join(texts))
            continue
        text = _block_text(block)
        texts.append(text)
        tokens += count_tokens(text)
    return tokens, prefix


def conversation(body: Mapping[str, Any]) -> Conversation:
    system_tokens, prefix = system_prompt(_list(body, "system"))
    prompt = Prompt(tokens=system_tokens)
    messages = _list(body, "messages", required=True)
    uses_tools = False
    last_results: list[str] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        if role not in ("user", "assistant") or not isinstance(content, list):
            raise validation(
                "Malformed input request: each message needs a 'role' (user|assistant) and a 'content' list."
            )
        if i == 0 and role != "user":
            raise validation(
                "A conversation must start with a user message. "
                "Try again with a conversation that starts with a user message."
            )
        texts: list[str] = []
        results: list[str] = []
        for block in content:
            if not isinstance(block, Mapping):
                raise validation("Malformed input request: each content block must be an object.")
            if "image" in block:
                _check_image(block)
            if any(k in block for k in MEDIA_BLOCKS):
                prompt.tokens += IMAGE_TOKENS
            elif isinstance(block.get("toolUse"), Mapping):
                use = block["toolUse"]
                uses_tools = True
                prompt.tokens += count_tokens(str(use.get("name", ""))) + count_tokens(json.dumps(use.get("input")))
            elif isinstance(block.get("toolResult"), Mapping):
                uses_tools = True
                text = _tool_result_text(block["toolResult"])
                results.append(text)
                prompt.tokens += count_tokens(text)
            elif isinstance(block.get("reasoningContent"), Mapping):
                reasoning = block["reasoningContent"].get("reasoningText")
                if isinstance(reasoning, Mapping):
                    prompt.tokens += count_tokens(str(reasoning.get("text", "")))
            elif "cachePoint" not in block:
                text = _block_text(block)
                texts.append(text)
                prompt.tokens += count_tokens(text)
        if role == "user" and texts:
            prompt.user_text = " ".join(texts)
        last_results = results if role == "user" else []
    if last_results:
        prompt.tool_results = last_results
    req = tool_request(body, uses_tools)
    config = body.get("inferenceConfig") or {}
    if not isinstance(config, Mapping):
        raise validation("Malformed input request: 'inferenceConfig' must be an object.")
    req.max_tokens = _max_tokens(config.get("maxTokens"))
    for name in ("temperature", "topP"):
        value = config.get(name)
        if value is not None and (
            not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1
        ):
            raise validation(f"The value at inferenceConfig.{name} must be between 0 and 1.")
    stops = config.get("stopSequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise validation("Malformed input request: 'inferenceConfig.stopSequences' must be a list of strings.")
    req.stop = stops
    guard = body.get("guardrailConfig")
    return Conversation(prompt, req, prefix, guard if isinstance(guard, Mapping) else None)


def _max_tokens(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise validation("The value at inferenceConfig.maxTokens must be an integer greater than or equal to 1.")
    return value


def tool_request(body: Mapping[str, Any], uses_tools: bool) -> Request:
    config = body.get("toolConfig")
    if config is None:
        if uses_tools:
            raise validation("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
        return Request()
    if not isinstance(config, Mapping):
        raise validation("Malformed input request: 'toolConfig' must be an object.")
    tools: list[Tool] = []
    for item in _list(config, "tools", required=True):
        spec = item.get("toolSpec") if isinstance(item, Mapping) else None
        if not isinstance(spec, Mapping):
            continue  # a cachePoint entry
        schema = spec.get("inputSchema")
        if not isinstance(spec.get("name"), str) or not isinstance(schema, Mapping) or "json" not in schema:
            raise validation("Malformed input request: each toolSpec needs a 'name' and an 'inputSchema.json'.")
        tools.append(Tool(spec["name"], schema["json"]))
    choice: Any = "auto"
    raw_choice = config.get("toolChoice")
    if isinstance(raw_choice, Mapping):
        if "any" in raw_choice:
            choice = "required"
        elif isinstance(raw_choice.get("tool"), Mapping):
            name = raw_choice["tool"].get("name")
            if name not in {t.name for t in tools}:
                raise validation(f"The tool '{name}' in toolChoice is not defined in toolConfig.tools.")
            choice = {"name": name}
    tokens = count_tokens(json.dumps(config["tools"], sort_keys=True))
    return Request(tools=tools, tools_tokens=tokens, tool_choice=choice)


# ---------------------------------------------------------------- the emulated model


def _tool_use_id() -> str:
    return "tooluse_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


def _cache(call: Call, conv: Conversation) -> tuple[int, int]:
    """(read, write) for the system prefix before a cachePoint: the first time written, then read."""
    if conv.cache_prefix is None:
        return 0, 0
    tokens, text = conv.cache_prefix
    key = "bedrock\x00" + hashlib.sha256(f"{call.model}\x00{text}".encode()).hexdigest()
    if key in call.ctx.prompt_cache:
        return tokens, 0
    call.ctx.prompt_cache.add(key)
    return 0, tokens


def guardrail_trace(conv: Conversation) -> dict[str, Any] | None:
    guard = conv.guardrail or {}
    if guard.get("trace") not in ("enabled", "enabled_full"):
        return None
    identifier = str(guard.get("guardrailIdentifier") or "emulated-guardrail")
    blocked = {
        "type": "MISCONDUCT",
        "confidence": "HIGH",
        "filterStrength": "HIGH",
        "action": "BLOCKED",
        "detected": True,
    }
    return {
        "guardrail": {
            "modelOutput": [],
            "inputAssessment": {identifier: {"contentPolicy": {"filters": [blocked]}}},
            "actionReason": "Guardrail blocked.",
        }
    }


def answer(call: Call, conv: Conversation) -> Answer:
    """Run the OpenAI emulator's generator (same text and tool rules), then apply Bedrock's stop reasons."""
    # A stand-in OpenAI call without the fault: stops, maxTokens and content filtering are applied here, and
    # an empty system text keeps the OpenAI automatic prompt cache out of it.
    stand_in = OpenAICall(
        call.request, call.ctx, call.endpoint, call.request_id, call.raw, {}, call.model, None, call.timing
    )
    stops, max_tokens = conv.req.stop, conv.req.max_tokens
    conv.req.stop, conv.req.max_tokens = [], None
    try:
        out = generate(stand_in, conv.prompt, conv.req, "messages")
    except OpenAIError as err:
        if err.kind is FaultKind.CONTEXT_LENGTH:
            raise BedrockError.of(FaultKind.CONTEXT_LENGTH) from err
        raise validation(err.message) from err
    read, write = _cache(call, conv)
    ans = Answer(
        list(out.pieces),
        out.tool_calls,
        "end_turn",
        out.prompt_tokens - read - write,
        read,
        write,
        conv.cache_prefix is not None,
    )
    for tool_call in ans.tool_calls:
        tool_call.call_id = _tool_use_id()
    if ans.tool_calls:
        ans.stop_reason = "tool_use"
    else:
        text, matched = truncate_at_stop(ans.text, stops)
        if matched:
            ans.pieces, ans.stop_reason = split_tokens(text), "stop_sequence"
        if max_tokens is not None and len(ans.pieces) > max_tokens:
            ans.pieces, ans.stop_reason = ans.pieces[:max_tokens], "max_tokens"
    if call.fault is GUARDRAIL:
        ans.pieces, ans.tool_calls, ans.stop_reason = [GUARDRAIL_MESSAGE], [], "guardrail_intervened"
        ans.piece_tokens = 0  # the model never ran: the canned message is not model output
        ans.guardrail_trace = guardrail_trace(conv)
    elif call.behaviour is Behaviour.CONTENT_FILTER and not ans.tool_calls:
        ans.pieces, ans.stop_reason = ans.pieces[: max(1, len(ans.pieces) // 2)], "content_filtered"
    return ans


def _tool_input(tool_call: ToolCall) -> Any:
    return json.loads(tool_call.arguments)


# ---------------------------------------------------------------- responses


def _outcome(call: Call, ans: Answer, outcome: str) -> str:
    if outcome != "ok":
        return outcome
    return {"guardrail_intervened": "guardrail", "content_filtered": "content_filter"}.get(ans.stop_reason, "ok")


async def converse(call: Call) -> web.StreamResponse:
    check_features(call.model, call.body, stream=False)
    ans = answer(call, conversation(call.body))
    delay = max(call.timing.latency_s, call.timing.slow_s if call.behaviour is Behaviour.SLOW else 0.0)
    content: list[dict[str, Any]]
    if ans.tool_calls:
        content = [
            {"toolUse": {"toolUseId": c.call_id, "name": c.name, "input": _tool_input(c)}} for c in ans.tool_calls
        ]
    else:
        content = [{"text": ans.text}]
    payload: dict[str, Any] = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": ans.stop_reason,
        "usage": ans.usage(),
        "metrics": {"latencyMs": int(delay * 1000)},
    }
    if ans.guardrail_trace is not None:
        payload["trace"] = ans.guardrail_trace
    resp, outcome = await send_json(call, payload)
    call.bill(
        ans.prompt_tokens,
        ans.output_tokens,
        cached=ans.cache_read,
        cache_write=ans.cache_write,
        outcome=_outcome(call, ans, outcome),
    )
    return resp


def stream_plan(call: Call, ans: Answer) -> StreamPlan:
    plan = StreamPlan()
    plan.head.append(wire.event("messageStart", {"role": "assistant"}))
    last_stop: bytes
    if ans.tool_calls:
        for i, c in enumerate(ans.tool_calls):
            start = {"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": c.call_id, "name": c.name}}}
            plan.content.append((wire.event("contentBlockStart", start), 1))  # the tool name: one token
            for piece in c.pieces:
                delta = {"contentBlockIndex": i, "delta": {"toolUse": {"input": piece}}}
                plan.content.append((wire.event("contentBlockDelta", delta), 1))
            stop = wire.event("contentBlockStop", {"contentBlockIndex": i})
            if i < len(ans.tool_calls) - 1:
                plan.content.append((stop, 0))
            last_stop = stop
    else:
        for group in deltas_of(ans.pieces):  # several tokens to a delta, as the real API streams them
            delta = {"contentBlockIndex": 0, "delta": {"text": "".join(group)}}
            plan.content.append((wire.event("contentBlockDelta", delta), ans.piece_tokens * len(group)))
        last_stop = wire.event("contentBlockStop", {"contentBlockIndex": 0})
    plan.tail.append(last_stop)
    plan.tail.append(wire.event("messageStop", {"stopReason": ans.stop_reason}))
    t = call.timing
    latency = t.ttft_s + t.inter_token_s * max(0, len(plan.content) - 1)
    if call.behaviour is Behaviour.SLOW:
        latency = max(latency, t.slow_s)
    metadata: dict[str, Any] = {"usage": ans.usage(), "metrics": {"latencyMs": int(latency * 1000)}}
    if ans.guardrail_trace is not None:
        metadata["trace"] = ans.guardrail_trace
    plan.tail.append(wire.event("metadata", metadata))
    if call.fault is THROTTLE_MIDSTREAM:
        plan.malformed = wire.exception("throttlingException", "Too many tokens, please wait before trying again.")
    elif call.fault is MODEL_STREAM_ERROR:
        plan.malformed = wire.exception(
            "modelStreamErrorException", "The model stream encountered an error. Retry your request."
        )
    else:
        plan.malformed = wire.corrupt(
            wire.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " garbled"}})
        )
    return plan


async def converse_stream(call: Call) -> web.StreamResponse:
    check_features(call.model, call.body, stream=True)
    ans = answer(call, conversation(call.body))
    resp = web.StreamResponse(status=200, headers=call.headers())
    resp.content_type = wire.EVENTSTREAM
    result = await run_stream(
        call.request, resp, stream_plan(call, ans), call.fault, call.timing, call.ctx.settings.stall_cap_s
    )
    outcome = result.outcome
    if outcome == "malformed" and call.fault in (THROTTLE_MIDSTREAM, MODEL_STREAM_ERROR):
        outcome = call.fault.name
    call.bill(
        ans.prompt_tokens,
        result.sent_tokens,
        cached=ans.cache_read,
        cache_write=ans.cache_write,
        stream=True,
        outcome=_outcome(call, ans, outcome),
    )
    return resp
