"""Parsing Anthropic Messages requests (the `/v1/messages` inbound API) into the normalized schema."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from gateway.schema import ChatRequest, validation_error
from gateway.wire.openai_in import metadata_from, pydantic_error

_FIELDS = frozenset({
    "model", "max_tokens", "messages", "system", "tools", "tool_choice", "stop_sequences", "temperature", "top_p",
    "top_k", "stream", "metadata", "gateway", "thinking", "service_tier",
})  # fmt: skip


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, block in enumerate(content):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise validation_error(f"{where}.{i}.type", "only text blocks are allowed here")
            texts.append(str(block.get("text", "")))
        return "".join(texts)
    if content is None:
        return ""
    raise validation_error(where, "must be a string or a list of text blocks")


def _image(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise validation_error(f"{where}.source", "required")
    if source.get("type") == "base64":
        return {"type": "image", "data": source.get("data"), "media_type": source.get("media_type")}
    if source.get("type") == "url":
        return {"type": "image", "url": source.get("url")}
    raise validation_error(f"{where}.source.type", "must be base64 or url")


def _turn(raw: Any, i: int) -> list[dict[str, Any]]:
    """One Anthropic turn → normalized messages (tool results become tool messages, in order)."""
    where = f"messages.{i}"
    if not isinstance(raw, dict) or raw.get("role") not in ("user", "assistant"):
        raise validation_error(f"{where}.role", "must be user or assistant")
    role, content = raw["role"], raw.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise validation_error(f"{where}.content", "must be a string or a list of content blocks")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_use" and role == "assistant":
            tool_input = block.get("input", {})
            if not isinstance(tool_input, dict):
                raise validation_error(f"{at}.input", "must be an object (the tool call's arguments)")
            calls.append({"id": block.get("id"), "name": block.get("name"), "arguments": json.dumps(tool_input)})
        elif kind == "tool_result" and role == "user":
            text = _text_of(block.get("content"), f"{at}.content")
            results.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # the gateway does not replay reasoning across providers
        else:
            raise validation_error(f"{at}.type", f"unsupported content block {kind!r} in a {role} turn")
    out = list(results)
    if parts or calls:
        message: dict[str, Any] = {"role": role, "content": parts or None}
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    return out


def _tool_choice(raw: Any) -> tuple[Any, bool | None]:
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        raise validation_error("tool_choice", "must be an object")
    parallel = False if raw.get("disable_parallel_tool_use") else None
    kind = raw.get("type")
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", parallel
    if kind == "tool":
        return {"type": "tool", "name": raw.get("name")}, parallel
    raise validation_error("tool_choice.type", "must be auto, any, tool or none")


def parse_messages(body: Any, headers: Mapping[str, str]) -> ChatRequest:
    if not isinstance(body, dict):
        raise validation_error("body", "the request body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise validation_error(unknown[0], "unsupported field")
    if not isinstance(body.get("max_tokens"), int):
        raise validation_error("max_tokens", "required (an integer)")
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise validation_error("messages", "must be a non-empty list")
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text_of(body["system"], "system")})
    for i, turn in enumerate(turns):
        messages.extend(_turn(turn, i))
    tools = []
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or "input_schema" not in tool:
            raise validation_error(f"tools.{i}", "a tool needs `name` and `input_schema` (no server tools)")
        tools.append({"name": tool.get("name"), "description": tool.get("description"),
                      "parameters": tool["input_schema"]})  # fmt: skip
    choice, parallel = _tool_choice(body.get("tool_choice"))
    meta = metadata_from(body, headers)
    user = (body.get("metadata") or {}).get("user_id")
    if user and "user" not in meta:
        meta["user"] = user
    data: dict[str, Any] = {
        "model": body.get("model"), "messages": messages, "tools": tools, "tool_choice": choice,
        "parallel_tool_calls": parallel, "max_tokens": body["max_tokens"], "stop": body.get("stop_sequences") or [],
        "stream": bool(body.get("stream", False)), "metadata": meta,
    }  # fmt: skip
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            data[key] = body[key]
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise pydantic_error(exc) from None
