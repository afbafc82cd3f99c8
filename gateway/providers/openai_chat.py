"""Translation between the normalized schema and OpenAI Chat Completions (request params, answers, stream chunks)."""

from __future__ import annotations

import hashlib
from typing import Any

from gateway.providers.base import Target
from gateway.schema import ChatRequest, ContentPart, FinishReason, Message, NamedToolChoice, ToolCall, ToolSpec, Usage

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def image_url(part: ContentPart) -> str:
    """The URL OpenAI expects for an image part: the URL itself or a base64 data URL."""
    return part.url if part.url is not None else f"data:{part.media_type};base64,{part.data}"  # type: ignore[union-attr]


def _content(message: Message) -> str | list[dict[str, Any]] | None:
    if not isinstance(message.content, list):
        return message.content
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if part.type == "text":
            parts.append({"type": "text", "text": part.text})
        else:
            image: dict[str, Any] = {"url": image_url(part)}
            if part.detail:
                image["detail"] = part.detail
            parts.append({"type": "image_url", "image_url": image})
    return parts


def message_to_openai(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": _content(message)}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.name and message.role in ("user", "system"):
        out["name"] = message.name
    return out


def tool_to_openai(tool: ToolSpec) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        fn["description"] = tool.description
    if tool.strict is not None:
        fn["strict"] = tool.strict
    return {"type": "function", "function": fn}


def tool_choice_to_openai(choice: Any) -> Any:
    if isinstance(choice, NamedToolChoice):
        return {"type": "function", "function": {"name": choice.name}}
    return choice


def response_format_to_openai(request: ChatRequest) -> dict[str, Any] | None:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    schema: dict[str, Any] = {"name": fmt.name or "response", "schema": fmt.json_schema}
    if fmt.strict is not None:
        schema["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": schema}


def safety_identifier(request: ChatRequest) -> str | None:
    """OpenAI's `safety_identifier`: the caller's own, else a hash of who the call is for (the end user of its org,
    else the gateway key): stable per user, and neither name nor key leaves the gateway."""
    if request.safety_identifier is not None:
        return request.safety_identifier
    meta = request.metadata
    key_id = meta.principal.key_id if meta.principal is not None else None
    who = f"user\0{meta.org}\0{meta.user}" if meta.user else f"key\0{key_id}" if key_id else None
    return hashlib.sha256(f"llm-gateway\0{who}".encode()).hexdigest()[:32] if who else None


def chat_params(request: ChatRequest, target: Target, *, stream: bool) -> dict[str, Any]:
    """The keyword arguments for `client.chat.completions.create`."""
    params: dict[str, Any] = {
        "model": target.upstream,
        "messages": [message_to_openai(m) for m in request.messages],
    }
    if request.tools:
        params["tools"] = [tool_to_openai(t) for t in request.tools]
        if request.tool_choice is not None:
            params["tool_choice"] = tool_choice_to_openai(request.tool_choice)
        if request.parallel_tool_calls is not None:
            params["parallel_tool_calls"] = request.parallel_tool_calls
    for key in ("temperature", "top_p", "seed"):
        value = getattr(request, key)
        if value is not None:
            params[key] = value
    if request.max_tokens is not None:
        params["max_completion_tokens"] = request.max_tokens
    if request.stop:
        params["stop"] = list(request.stop)
    if (fmt := response_format_to_openai(request)) is not None:
        params["response_format"] = fmt
    if (who := safety_identifier(request)) is not None:
        params["safety_identifier"] = who
    if stream:
        params["stream"] = True
        params["stream_options"] = {"include_usage": True}  # forced: streamed calls must be billed exactly
    return params


def usage_from_openai(usage: dict[str, Any] | None) -> Usage:
    """OpenAI chat usage follows the gateway convention already (input includes cached, output includes reasoning)."""
    if not usage:
        return Usage()
    return Usage(
        input_tokens=usage.get("prompt_tokens") or 0,
        output_tokens=usage.get("completion_tokens") or 0,
        cached_input_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0,
        reasoning_tokens=(usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


def tool_calls_from_openai(calls: list[dict[str, Any]] | None) -> tuple[ToolCall, ...]:
    if not calls:
        return ()
    return tuple(
        ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"].get("arguments") or "") for c in calls
    )
