"""Translation between the normalized schema and Gemini generateContent (contents, config, candidates, usage)."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from gateway.providers.gemini_schema import sanitize_schema
from gateway.schema import ChatRequest, FinishReason, Message, NamedToolChoice, ToolCall, Usage

FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "FINISH_REASON_UNSPECIFIED": "stop",
    "OTHER": "stop",
}
BLOCKED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"})
_CALL_PREFIX = "gcall"


def call_id(index: int, signature: bytes | None) -> str:
    """A tool-call id that carries Gemini's thought signature, so the next turn can hand it back statelessly."""
    tail = base64.urlsafe_b64encode(signature).decode().rstrip("=") if signature else secrets.token_hex(4)
    return f"{_CALL_PREFIX}_{index}_{'s' if signature else 'n'}_{tail}"


def signature_of(tool_call_id: str) -> bytes | None:
    parts = tool_call_id.split("_", 3)
    if len(parts) != 4 or parts[0] != _CALL_PREFIX or parts[2] != "s":
        return None
    return base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4))


def _parts(message: Message) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if isinstance(message.content, str):
        if message.content:
            parts.append({"text": message.content})
    elif message.content:
        for part in message.content:
            if part.type == "text":
                parts.append({"text": part.text})
            elif part.data is not None:
                parts.append({"inline_data": {"mime_type": part.media_type, "data": base64.b64decode(part.data)}})
            else:
                parts.append({"file_data": {"file_uri": part.url, "mime_type": part.media_type or "image/jpeg"}})
    for call in message.tool_calls:
        args = json.loads(call.arguments) if call.arguments.strip() else {}
        call_part: dict[str, Any] = {"function_call": {"name": call.name, "args": args}}
        if (signature := signature_of(call.id)) is not None:
            call_part["thought_signature"] = signature
        parts.append(call_part)
    return parts


def contents_of(request: ChatRequest) -> tuple[str | None, list[dict[str, Any]]]:
    """(system instruction, contents); tool results answer by function name, consecutive turns merge."""
    names = {c.id: c.name for m in request.messages for c in m.tool_calls}
    system = "\n\n".join(m.text() for m in request.messages if m.role == "system") or None
    contents: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            name = names.get(m.tool_call_id or "", m.name or "tool")
            role, parts = "user", [{"function_response": {"name": name, "response": {"result": m.text()}}}]
        else:
            role, parts = ("model" if m.role == "assistant" else "user"), _parts(m)
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def config_of(request: ChatRequest, max_tokens: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {"automatic_function_calling": {"disable": True}}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed")):
        if (value := getattr(request, ours)) is not None:
            config[theirs] = value
    if max_tokens is not None:
        config["max_output_tokens"] = max_tokens
    if request.stop:
        config["stop_sequences"] = list(request.stop)
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        config["response_mime_type"] = "application/json"
        if fmt.type == "json_schema":
            config["response_schema"] = sanitize_schema(fmt.json_schema)
    if request.tools:
        config["tools"] = [{"function_declarations": [
            {"name": t.name, "description": t.description or "", "parameters": sanitize_schema(t.parameters)}
            for t in request.tools]}]  # fmt: skip
        choice = request.tool_choice
        if isinstance(choice, NamedToolChoice):
            calling = {"mode": "ANY", "allowed_function_names": [choice.name]}
        elif choice in ("required", "none", "auto"):
            calling = {"mode": {"required": "ANY", "none": "NONE", "auto": "AUTO"}[choice]}
        else:
            calling = None
        if calling:
            config["tool_config"] = {"function_calling_config": calling}
    return config


def usage_of(meta: Any) -> Usage:
    """Gemini: the prompt count includes cached tokens; thoughts are billed as output, apart from candidates."""
    if meta is None:
        return Usage()
    thoughts = meta.thoughts_token_count or 0
    return Usage(
        input_tokens=meta.prompt_token_count or 0,
        output_tokens=(meta.candidates_token_count or 0) + thoughts,
        cached_input_tokens=meta.cached_content_token_count or 0,
        reasoning_tokens=thoughts,
    )


def parts_of(candidate: Any, first_call_index: int = 0) -> tuple[list[str], list[ToolCall]]:
    """Visible text pieces and function calls of one candidate (thought summaries skipped)."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    content = getattr(candidate, "content", None)
    for part in content.parts if content and content.parts else ():
        if part.thought:
            continue
        if part.text:
            texts.append(part.text)
        elif part.function_call is not None:
            fc = part.function_call
            index = first_call_index + len(calls)
            calls.append(ToolCall(id=call_id(index, part.thought_signature), name=fc.name or "",
                                  arguments=json.dumps(fc.args or {})))  # fmt: skip
    return texts, calls
