"""Translation between the normalized schema and the OpenAI Responses API (input items, output items, events)."""

from __future__ import annotations

from typing import Any

from gateway.providers.base import Target
from gateway.providers.openai_chat import image_url, safety_identifier
from gateway.schema import (
    ChatRequest,
    EmbeddingsRequest,
    FinishReason,
    Message,
    NamedToolChoice,
    ToolCall,
    Usage,
    validation_error,
)

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _content_parts(message: Message) -> str | list[dict[str, Any]]:
    out_type = "output_text" if message.role == "assistant" else "input_text"
    if not isinstance(message.content, list):
        return message.content or ""
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if part.type == "text":
            parts.append({"type": out_type, "text": part.text})
        else:
            image: dict[str, Any] = {"type": "input_image", "image_url": image_url(part)}
            if part.detail:
                image["detail"] = part.detail
            parts.append(image)
    return parts


def input_items(request: ChatRequest) -> tuple[str | None, list[dict[str, Any]]]:
    """(instructions, input items): system messages become instructions, tool turns become call items."""
    system = [m.text() for m in request.messages if m.role == "system"]
    items: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            items.append({"type": "function_call_output", "call_id": m.tool_call_id, "output": m.text()})
            continue
        if m.content is not None and (m.role != "assistant" or m.text()):
            items.append({"role": m.role, "content": _content_parts(m)})
        for call in m.tool_calls:
            items.append({"type": "function_call", "call_id": call.id, "name": call.name, "arguments": call.arguments})
    return ("\n\n".join(system) if system else None), items


def responses_problem(request: ChatRequest | EmbeddingsRequest) -> str | None:
    """Why the Responses API cannot take `request` as sent: it has no stop sequences (dropping them silently
    would return text the caller asked to be cut)."""
    if isinstance(request, ChatRequest) and request.stop:
        return "the Responses API has no stop sequences"
    return None


def responses_params(request: ChatRequest, target: Target, *, stream: bool) -> dict[str, Any]:
    """The keyword arguments for `client.responses.create`."""
    if (problem := responses_problem(request)) is not None:
        raise validation_error("stop", f"`{target.name}`: {problem}")
    instructions, items = input_items(request)
    params: dict[str, Any] = {"model": target.upstream, "input": items, "store": False}
    if instructions is not None:
        params["instructions"] = instructions
    if request.tools:
        tools = []
        for t in request.tools:
            tool: dict[str, Any] = {"type": "function", "name": t.name, "parameters": t.parameters}
            if t.description:
                tool["description"] = t.description
            tool["strict"] = bool(t.strict)
            tools.append(tool)
        params["tools"] = tools
        if isinstance(request.tool_choice, NamedToolChoice):
            params["tool_choice"] = {"type": "function", "name": request.tool_choice.name}
        elif request.tool_choice is not None:
            params["tool_choice"] = request.tool_choice
        if request.parallel_tool_calls is not None:
            params["parallel_tool_calls"] = request.parallel_tool_calls
    for key in ("temperature", "top_p"):
        value = getattr(request, key)
        if value is not None:
            params[key] = value
    if request.max_tokens is not None:
        params["max_output_tokens"] = request.max_tokens
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        params["text"] = {"format": {"type": "json_object"}}
    elif fmt is not None and fmt.type == "json_schema":
        spec: dict[str, Any] = {"type": "json_schema", "name": fmt.name or "response", "schema": fmt.json_schema}
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        params["text"] = {"format": spec}
    if (who := safety_identifier(request)) is not None:
        params["safety_identifier"] = who
    if stream:
        params["stream"] = True
    return params


def usage_from_responses(usage: dict[str, Any] | None) -> Usage:
    if not usage:
        return Usage()
    return Usage(
        input_tokens=usage.get("input_tokens") or 0,
        output_tokens=usage.get("output_tokens") or 0,
        cached_input_tokens=(usage.get("input_tokens_details") or {}).get("cached_tokens") or 0,
        reasoning_tokens=(usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


def output_of(response: dict[str, Any]) -> tuple[str | None, tuple[ToolCall, ...]]:
    """Text and tool calls from a Responses `output` list."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for item in response.get("output") or ():
        if item.get("type") == "message":
            texts.extend(c.get("text", "") for c in item.get("content") or () if c.get("type") == "output_text")
        elif item.get("type") == "function_call":
            calls.append(ToolCall(id=item["call_id"], name=item["name"], arguments=item.get("arguments") or ""))
    return ("".join(texts) if texts else None), tuple(calls)


def finish_reason_of(response: dict[str, Any], has_calls: bool) -> FinishReason:
    """Normalized finish reason for a Responses result (status + incomplete_details)."""
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if has_calls else "stop"
