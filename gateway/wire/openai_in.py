"""Parsing OpenAI-format requests (chat completions, embeddings) into the normalized schema, naming bad fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from gateway.schema import ChatRequest, EmbeddingsRequest, GatewayError, validation_error
from gateway.schema.chat import arguments_problem

# Fields of the OpenAI chat API that we accept and ignore because they change nothing we do.
_IGNORED_CHAT = frozenset({"user", "store", "metadata", "service_tier", "prompt_cache_key"})
_CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "response_format",
        "stream",
        "stream_options",
        "n",
        "logprobs",
        "gateway",
        "fallbacks",
        "models",
        "safety_identifier",
        *_IGNORED_CHAT,
    }
)
_EMBED_FIELDS = frozenset({"model", "input", "dimensions", "encoding_format", "user", "gateway", "input_type"})
_METADATA_HEADERS = {
    "x-gateway-org": "org",
    "x-gateway-user": "user",
    "x-gateway-daemon": "daemon",
    "x-gateway-turn-id": "turn_id",
    "x-gateway-task-class": "task_class",
    "x-gateway-latency-target-ms": "latency_target_ms",
    "x-gateway-budget-tier": "budget_tier",
    "x-gateway-deadline": "deadline",
    "x-gateway-timeout-ms": "timeout_ms",
}
_CALL_BUDGET_HEADERS = {  # the per-call budget, `gateway.budget` in a body
    "x-gateway-budget-max-cost-usd": "max_cost_usd",
    "x-gateway-budget-max-tokens": "max_tokens",
    "x-gateway-budget-on-exceed": "on_exceed",
}


def metadata_from(body: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """Gateway metadata from the `gateway` body object, then `x-gateway-*` headers."""
    meta = dict(body.get("gateway") or {})
    if not isinstance(body.get("gateway", {}), dict):
        raise validation_error("gateway", "must be an object")
    for header, field in _METADATA_HEADERS.items():
        if (value := headers.get(header)) is not None:
            meta[field] = value
    if "user" not in meta and isinstance(body.get("user"), str):
        meta["user"] = body["user"]
    budget = {field: v for header, field in _CALL_BUDGET_HEADERS.items() if (v := headers.get(header)) is not None}
    if budget:
        if not isinstance(meta.get("budget", {}), dict):
            raise validation_error("gateway.budget", "must be an object")
        meta["budget"] = {**(meta.get("budget") or {}), **budget}
    return meta


def _image(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    spec = part.get("image_url")
    if isinstance(spec, str):
        spec = {"url": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
        raise validation_error(f"{where}.image_url.url", "an image part needs a URL or a data: URL")
    url: str = spec["url"]
    out: dict[str, Any] = {"type": "image", "detail": spec.get("detail")}
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        if not header.endswith(";base64") or not data:
            raise validation_error(f"{where}.image_url.url", "a data URL must be base64 (data:<type>;base64,...)")
        out.update(data=data, media_type=header[5:-7])
    else:
        out["url"] = url
    return out


def _content(content: Any, where: str) -> Any:
    if not isinstance(content, list):
        return content
    parts = []
    for i, part in enumerate(content):
        at = f"{where}.{i}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": part.get("text")})
        elif kind == "image_url":
            parts.append(_image(part, at))
        else:
            raise validation_error(f"{at}.type", f"unsupported content part type {kind!r} (text, image_url)")
    return parts


def _message(raw: Any, i: int) -> dict[str, Any]:
    where = f"messages.{i}"
    if not isinstance(raw, dict):
        raise validation_error(where, "a message must be an object")
    role = raw.get("role")
    if role == "developer":
        role = "system"
    msg: dict[str, Any] = {"role": role, "content": _content(raw.get("content"), f"{where}.content")}
    if raw.get("tool_calls"):
        calls = []
        for j, call in enumerate(raw["tool_calls"]):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict):
                raise validation_error(f"{where}.tool_calls.{j}.function", "required")
            arguments = fn.get("arguments") or ""
            at = f"{where}.tool_calls.{j}.function.arguments"
            if not isinstance(arguments, str):
                raise validation_error(at, "must be a string (the JSON text of an object)")
            if (problem := arguments_problem(arguments)) is not None:
                raise validation_error(at, problem)
            calls.append({"id": call.get("id"), "name": fn.get("name"), "arguments": arguments})
        msg["tool_calls"] = calls
    for key in ("tool_call_id", "name"):
        if raw.get(key) is not None:
            msg[key] = raw[key]
    return msg


def _tool(raw: Any, i: int) -> dict[str, Any]:
    if not isinstance(raw, dict) or raw.get("type") != "function" or not isinstance(raw.get("function"), dict):
        raise validation_error(f"tools.{i}", 'a tool must be {"type": "function", "function": {...}}')
    fn = raw["function"]
    tool = {"name": fn.get("name"), "description": fn.get("description"), "strict": fn.get("strict")}
    if fn.get("parameters") is not None:
        tool["parameters"] = fn["parameters"]
    return tool


def _tool_choice(raw: Any) -> Any:
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, dict) and isinstance(raw.get("function"), dict):
        return {"type": "tool", "name": raw["function"].get("name")}
    raise validation_error("tool_choice", 'must be auto, none, required or {"type":"function","function":{"name":...}}')


def _response_format(raw: Any) -> Any:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise validation_error("response_format", "must be an object")
    out: dict[str, Any] = {"type": raw.get("type")}
    if raw.get("type") == "json_schema":
        spec = raw.get("json_schema")
        if not isinstance(spec, dict):
            raise validation_error("response_format.json_schema", "required for type json_schema")
        out.update(json_schema=spec.get("schema"), name=spec.get("name"), strict=spec.get("strict"))
    return out


def pydantic_error(exc: ValidationError, prefix: str = "") -> GatewayError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-union")))
    if loc.startswith("metadata"):
        loc = "gateway" + loc[len("metadata") :]  # metadata arrives as the `gateway` object or x-gateway-* headers
    return validation_error(prefix + loc if loc else (prefix.rstrip(".") or "body"), err["msg"])


def _check_fields(body: Any, allowed: frozenset[str]) -> None:
    if not isinstance(body, dict):
        raise validation_error("body", "the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise validation_error(unknown[0], "unsupported field")


def parse_chat(body: Any, headers: Mapping[str, str]) -> tuple[ChatRequest, bool]:
    """(normalized request, whether the client asked for the usage chunk) from an OpenAI chat body."""
    _check_fields(body, _CHAT_FIELDS)
    if body.get("n", 1) != 1:
        raise validation_error("n", "only n=1 is supported")
    if body.get("logprobs"):
        raise validation_error("logprobs", "logprobs are not supported")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise validation_error("messages", "must be a non-empty list")
    stop = body.get("stop")
    data: dict[str, Any] = {
        "model": body.get("model"),
        "messages": [_message(m, i) for i, m in enumerate(messages)],
        "tools": [_tool(t, i) for i, t in enumerate(body.get("tools") or [])],
        "tool_choice": _tool_choice(body.get("tool_choice")),
        "response_format": _response_format(body.get("response_format")),
        "stop": [stop] if isinstance(stop, str) else (stop or []),
        "max_tokens": body.get("max_completion_tokens", body.get("max_tokens")),
        "stream": bool(body.get("stream", False)),
        "metadata": metadata_from(body, headers),
    }
    backups = body.get("fallbacks") or body.get("models") or []  # LiteLLM / OpenRouter spellings
    if not isinstance(backups, list) or not all(isinstance(m, str) for m in backups):
        raise validation_error("fallbacks", "must be a list of model names")
    data["fallbacks"] = [m for m in backups if m != data["model"]]
    for key in ("parallel_tool_calls", "temperature", "top_p", "seed", "safety_identifier"):
        if body.get(key) is not None:
            data[key] = body[key]
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise pydantic_error(exc) from None
    options = body.get("stream_options") or {}
    return request, bool(isinstance(options, dict) and options.get("include_usage"))


def parse_embeddings(body: Any, headers: Mapping[str, str]) -> tuple[EmbeddingsRequest, str]:
    """(normalized request, encoding format "float" | "base64") from an OpenAI embeddings body."""
    _check_fields(body, _EMBED_FIELDS)
    raw = body.get("input")
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
        texts = raw
    elif isinstance(raw, list) and raw and all(isinstance(t, int | list) for t in raw):
        raise validation_error("input", "token-id input is not supported; send text")
    else:
        raise validation_error("input", "must be a non-empty string or list of strings")
    if any(not t for t in texts):
        raise validation_error("input", "texts must not be empty")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise validation_error("encoding_format", "must be float or base64")
    try:
        request = EmbeddingsRequest.model_validate(
            {
                "model": body.get("model") or "",
                "texts": texts,
                "dimensions": body.get("dimensions"),
                "input_type": body.get("input_type"),
                "metadata": metadata_from(body, headers),
            }
        )
    except ValidationError as exc:
        raise pydantic_error(exc) from None
    return request, encoding
