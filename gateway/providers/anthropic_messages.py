"""Translation between the normalized schema and Anthropic Messages (request body, answers, usage, stop reasons)."""

from __future__ import annotations

import json
from typing import Any

from gateway.providers.base import Target
from gateway.providers.forced_json import DESCRIPTION, JSON_TOOL, is_answer, json_schema_of
from gateway.schema import ChatRequest, FinishReason, Message, NamedToolChoice, ToolCall, Usage

DEFAULT_MAX_TOKENS = 4096
STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _blocks(message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if isinstance(message.content, str):
        if message.content:
            blocks.append({"type": "text", "text": message.content})
    elif message.content:
        for part in message.content:
            if part.type == "text":
                blocks.append({"type": "text", "text": part.text})
            elif part.url is not None:
                blocks.append({"type": "image", "source": {"type": "url", "url": part.url}})
            else:
                source = {"type": "base64", "media_type": part.media_type, "data": part.data}
                blocks.append({"type": "image", "source": source})
    for call in message.tool_calls:
        args = json.loads(call.arguments) if call.arguments.strip() else {}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": args})
    return blocks


def messages_of(request: ChatRequest) -> tuple[str | None, list[dict[str, Any]]]:
    """(system, messages): tool results become user turns; consecutive same-role turns merge (Anthropic alternates)."""
    system = "\n\n".join(m.text() for m in request.messages if m.role == "system") or None
    out: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            role, blocks = "user", [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.text()}]
        else:
            role, blocks = m.role, _blocks(m)
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def _tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        out: dict[str, Any] = {"type": "tool", "name": choice.name}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "auto" or request.parallel_tool_calls is False:
        out = {"type": "auto"}
    else:
        return None
    if request.parallel_tool_calls is False:
        out["disable_parallel_tool_use"] = True
    return out


def messages_body(request: ChatRequest, target: Target, *, stream: bool) -> dict[str, Any]:
    """The JSON body of `POST /v1/messages`."""
    system, messages = messages_of(request)
    max_tokens = request.max_tokens or target.entry.max_output_tokens or DEFAULT_MAX_TOKENS
    body: dict[str, Any] = {"model": target.upstream, "max_tokens": max_tokens, "messages": messages}
    if system is not None:
        body["system"] = system
    tools = [
        {"name": t.name, "input_schema": t.parameters, **({"description": t.description} if t.description else {})}
        for t in request.tools
    ]
    if (schema := json_schema_of(request)) is not None:  # JSON mode: Anthropic has no response_format
        tools.append({"name": JSON_TOOL, "description": DESCRIPTION, "input_schema": schema})
        body["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
    elif (choice := _tool_choice(request)) is not None and tools:
        body["tool_choice"] = choice
    if tools:
        body["tools"] = tools
    for key in ("temperature", "top_p"):
        if (value := getattr(request, key)) is not None:
            body[key] = value
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if stream:
        body["stream"] = True
    return body


def usage_of(usage: dict[str, Any] | None) -> Usage:
    """Anthropic's input_tokens excludes cache reads and writes; the gateway's input includes them."""
    usage = usage or {}
    return Usage.cache_exclusive(usage.get("input_tokens") or 0, usage.get("output_tokens") or 0,
                                 usage.get("cache_read_input_tokens") or 0,
                                 usage.get("cache_creation_input_tokens") or 0)  # fmt: skip


def content_of(blocks: list[dict[str, Any]], json_mode: bool) -> tuple[str | None, tuple[ToolCall, ...]]:
    """Text and tool calls; in JSON mode the forced tool's input is the answer text."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in blocks:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            if is_answer(block.get("name"), json_mode):
                return json.dumps(block.get("input") or {}), ()
            calls.append(ToolCall(id=block["id"], name=block["name"], arguments=json.dumps(block.get("input") or {})))
    return ("".join(texts) if texts else None), tuple(calls)
