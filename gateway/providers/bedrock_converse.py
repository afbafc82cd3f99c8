"""Translation between the normalized schema and Bedrock Converse (messages, toolConfig, stop reasons, usage)."""

from __future__ import annotations

import base64
import json
from typing import Any

from gateway.config import Guardrail
from gateway.providers.bedrock_families import family_of, family_problem, fold_system
from gateway.providers.forced_json import DESCRIPTION, JSON_TOOL, is_answer, json_schema_of
from gateway.schema import (
    ChatRequest,
    ContentPart,
    FinishReason,
    Message,
    NamedToolChoice,
    ToolCall,
    Usage,
    validation_error,
)

STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
}
FILTERED = frozenset({"guardrail_intervened", "content_filtered"})
MALFORMED = frozenset({"malformed_model_output", "malformed_tool_use"})
_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp"}


def image_problem(part: ContentPart) -> str | None:
    """Why Converse cannot take this image part as sent (None: it can)."""
    if part.type != "image":
        return None
    if part.data is None:
        return "Bedrock takes images as inline data, not by URL"
    if part.media_type not in _FORMATS:
        return f"Bedrock does not take {part.media_type} images"
    return None


def unsupported_chat(request: ChatRequest, model_id: str) -> str | None:
    """Why Converse cannot take `request` as sent to `model_id`: the first image it would refuse, or tools and
    forced tool choices the model family does not take."""
    for m in request.messages:
        for part in m.content if isinstance(m.content, list) else ():
            if (problem := image_problem(part)) is not None:
                return problem
    return family_problem(request, model_id)


def _blocks(message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if isinstance(message.content, str):
        if message.content:
            blocks.append({"text": message.content})
    elif message.content:
        for i, part in enumerate(message.content):
            if part.type == "text":
                blocks.append({"text": part.text})
            elif (problem := image_problem(part)) is not None:
                raise validation_error(f"content.{i}" if part.data is None else f"content.{i}.media_type", problem)
            else:
                fmt = _FORMATS[part.media_type or ""]
                blocks.append({"image": {"format": fmt, "source": {"bytes": base64.b64decode(part.data or "")}}})
    for call in message.tool_calls:
        args = json.loads(call.arguments) if call.arguments.strip() else {}
        blocks.append({"toolUse": {"toolUseId": call.id, "name": call.name, "input": args}})
    return blocks


def converse_args(
    request: ChatRequest, model_id: str, max_tokens: int | None, guardrail: Guardrail | None = None
) -> dict[str, Any]:
    """Keyword arguments for `client.converse` / `client.converse_stream`."""
    system = [{"text": m.text()} for m in request.messages if m.role == "system" and m.text()]
    messages: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            role = "user"
            blocks = [{"toolResult": {"toolUseId": m.tool_call_id, "content": [{"text": m.text()}]}}]
        else:
            role, blocks = m.role, _blocks(m)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    args: dict[str, Any] = {"modelId": model_id, "messages": messages}
    family = family_of(model_id)
    if system and family.system:
        args["system"] = system
    elif system:
        fold_system(system, messages)
    inference: dict[str, Any] = {}
    if max_tokens is not None:
        inference["maxTokens"] = max_tokens
    if request.temperature is not None:
        inference["temperature"] = request.temperature  # Bedrock refuses > 1 itself, naming the field
    if request.top_p is not None:
        inference["topP"] = request.top_p
    if request.stop:
        inference["stopSequences"] = list(request.stop)
    if inference:
        args["inferenceConfig"] = inference
    tools = [{"toolSpec": {"name": t.name, "description": t.description or t.name,
                           "inputSchema": {"json": t.parameters}}} for t in request.tools]  # fmt: skip
    choice: dict[str, Any] | None = None
    if (schema := json_schema_of(request)) is not None:  # JSON mode rides on a forced tool call
        tools.append({"toolSpec": {"name": JSON_TOOL, "description": DESCRIPTION, "inputSchema": {"json": schema}}})
        choice = {"tool": {"name": JSON_TOOL}}
    elif isinstance(request.tool_choice, NamedToolChoice):
        choice = {"tool": {"name": request.tool_choice.name}}
    elif request.tool_choice == "required":
        choice = {"any": {}}
    elif request.tool_choice == "auto":
        choice = {"auto": {}}
    if tools and request.tool_choice != "none":
        keep_choice = choice is not None and family.forced_tool  # `auto` is the default where none can be sent
        args["toolConfig"] = {"tools": tools, **({"toolChoice": choice} if keep_choice else {})}
    if guardrail is not None:
        args["guardrailConfig"] = {"guardrailIdentifier": guardrail.identifier, "guardrailVersion": guardrail.version,
                                   "trace": "enabled" if guardrail.trace else "disabled"}  # fmt: skip
    return args


def usage_of(usage: dict[str, Any] | None) -> Usage:
    """Bedrock's inputTokens excludes cache reads and writes; the gateway's input includes them."""
    usage = usage or {}
    read, write = usage.get("cacheReadInputTokens") or 0, usage.get("cacheWriteInputTokens") or 0
    return Usage.cache_exclusive(usage.get("inputTokens") or 0, usage.get("outputTokens") or 0, read, write)


def content_of(blocks: list[dict[str, Any]], json_mode: bool) -> tuple[str | None, tuple[ToolCall, ...]]:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in blocks:
        if "text" in block:
            texts.append(block["text"])
        elif "toolUse" in block:
            use = block["toolUse"]
            if is_answer(use.get("name"), json_mode):
                return json.dumps(use.get("input") or {}), ()
            calls.append(ToolCall(id=use["toolUseId"], name=use["name"], arguments=json.dumps(use.get("input") or {})))
    return ("".join(texts) if texts else None), tuple(calls)
