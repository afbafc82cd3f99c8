"""Reading a GenerateContentRequest: contents, system instruction, tools, schemas, thought signatures."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.emulators.gemini.wire import GeminiError, invalid, pick
from gateway.emulators.openai.generate import Prompt, Request, Tool
from gateway.emulators.text import IMAGE_TOKENS, count_json_tokens, count_tokens

ROLES = (None, "user", "model", "function")
# Keys the OpenAPI-subset `Schema` (`parameters`, `responseSchema`) does not know; `*_json_schema` accepts them.
# (The SDK's `types.Schema(additional_properties=...)` goes out snake_case, so both spellings are refused.)
FORBIDDEN_SCHEMA_KEYS = (
    "$schema", "additionalProperties", "additional_properties", "exclusiveMinimum", "exclusive_minimum",
    "exclusiveMaximum", "exclusive_maximum", "$ref", "$defs",
)  # fmt: skip
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_THINKING_RE = re.compile(r"-(2\.5|3)(?:[.-]|$)")
SIGNATURE_PREFIX = b"emu-thought-sig:"


def is_thinking_model(model: str) -> bool:
    """Models that think (thoughtsTokenCount) and sign their function calls: `*thinking*`, `*-2.5-*`, `*-3*`."""
    return "thinking" in model or bool(_THINKING_RE.search(model))


def thought_signature(name: str, args: Any) -> str:
    """The deterministic signature of one function call (standard base64; the SDK echoes it url-safe)."""
    digest = hashlib.sha256(f"{name}\x00{json.dumps(args, sort_keys=True)}".encode()).digest()
    return base64.b64encode(SIGNATURE_PREFIX + digest[:24]).decode()


def _b64decode(value: str) -> bytes | None:
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def check_signature(part: Mapping[str, Any], name: str, args: Any, where: str) -> None:
    signature = pick(part, "thoughtSignature")
    if not isinstance(signature, str) or not signature:
        raise invalid(
            f"Function call is missing a thought_signature in functionCall parts. This is required for tools to work "
            f"correctly. Additional data, function call `{name}`, position {where}. Please refer to "
            "https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
            f"{where}.thought_signature",
        )
    if _b64decode(signature) != _b64decode(thought_signature(name, args)):
        raise invalid(f"Thought signature is not valid for function call `{name}` at {where}.", where)


def lower_types(schema: Any) -> Any:
    """An OpenAPI-subset schema (`"type": "OBJECT"`) with JSON-Schema type names, for the value generator."""
    if isinstance(schema, list):
        return [lower_types(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key == "type" and isinstance(value, list):
            out[key] = [v.lower() if isinstance(v, str) else v for v in value]
        elif key == "properties" and isinstance(value, Mapping):
            out[key] = {name: lower_types(sub) for name, sub in value.items()}
        elif key in ("items", "not", *_SCHEMA_LISTS):
            out[key] = lower_types(value)
        else:
            out[key] = value
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def check_schema(schema: Any, where: str) -> None:
    """Reject JSON-Schema-only keys the way the real API does for the `Schema` message (400, naming the key)."""
    if isinstance(schema, list):
        for i, sub in enumerate(schema):
            check_schema(sub, f"{where}[{i}]")
        return
    if not isinstance(schema, Mapping):
        return
    for key in FORBIDDEN_SCHEMA_KEYS:
        if key in schema:
            raise invalid(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field.", where
            )
    props = schema.get("properties")
    if isinstance(props, Mapping):
        for name, sub in props.items():
            check_schema(sub, f"{where}.properties[{name}].value")
    for key in ("items", *_SCHEMA_LISTS):
        if key in schema:
            check_schema(schema[key], f"{where}.{key}")


@dataclass
class Parsed:
    """The emulated model's view of one request plus Gemini-specific accounting."""

    prompt: Prompt
    request: Request
    text_tokens: int = 0
    media_tokens: dict[str, int] = field(default_factory=dict)  # modality -> tokens
    system_text: str = ""
    system_tokens: int = 0

    def details(self) -> list[dict[str, Any]]:
        rows = [{"modality": "TEXT", "tokenCount": self.text_tokens}]
        return rows + [{"modality": m, "tokenCount": n} for m, n in sorted(self.media_tokens.items())]


def _modality(mime: str) -> str:
    kind = mime.split("/", 1)[0].lower()
    return {"image": "IMAGE", "audio": "AUDIO", "video": "VIDEO"}.get(kind, "DOCUMENT")


def _result_text(response: Any) -> str:
    """What the answer quotes from a functionResponse: a lone string value, else the JSON."""
    if isinstance(response, Mapping) and len(response) == 1:
        (value,) = response.values()
        if isinstance(value, str):
            return value
    return json.dumps(response, sort_keys=True)


def _parts_text(parsed: Parsed, parts: list[Any], where: str, role: Any, signed: bool) -> tuple[str, list[str]]:
    """Count one content's parts into `parsed`; returns (joined text, functionResponse results)."""
    texts: list[str] = []
    results: list[str] = []
    for j, part in enumerate(parts):
        at = f"{where}.parts[{j}]"
        if not isinstance(part, Mapping):
            raise invalid(f"Invalid value at '{at}': expected a Part object.", at)
        text = part.get("text")
        inline = pick(part, "inlineData")
        file_data = pick(part, "fileData")
        call = pick(part, "functionCall")
        response = pick(part, "functionResponse")
        if isinstance(text, str):
            if not part.get("thought"):
                parsed.text_tokens += count_tokens(text)
                texts.append(text)
        elif isinstance(inline, Mapping) or isinstance(file_data, Mapping):
            media = inline if isinstance(inline, Mapping) else file_data
            mime = pick(media, "mimeType")
            if not isinstance(mime, str) or not mime:
                raise invalid(f"* GenerateContentRequest.{at}.mime_type: mime_type must be specified.\n", at)
            if isinstance(inline, Mapping) and not isinstance(inline.get("data"), str):
                raise invalid(f"* GenerateContentRequest.{at}.inline_data.data: data must be specified.\n", at)
            modality = _modality(mime)
            parsed.media_tokens[modality] = parsed.media_tokens.get(modality, 0) + IMAGE_TOKENS
        elif isinstance(call, Mapping):
            name, args = str(call.get("name", "")), call.get("args") or {}
            parsed.text_tokens += count_tokens(name) + count_json_tokens(args)
            if signed and role == "model":
                check_signature(part, name, args, at)
        elif isinstance(response, Mapping):
            body = response.get("response")
            parsed.text_tokens += count_tokens(str(response.get("name", ""))) + count_json_tokens(body)
            results.append(_result_text(body))
    return " ".join(texts), results


def parse_contents(body: Mapping[str, Any], signed: bool) -> Parsed:
    """Contents and systemInstruction -> Prompt (tokens, last user text, trailing function results)."""
    parsed = Parsed(Prompt(), Request())
    contents = body.get("contents")
    if isinstance(contents, Mapping):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise invalid("* GenerateContentRequest.contents: contents is not specified\n", "contents")
    results: list[str] = []
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        if not isinstance(content, Mapping):
            raise invalid(f"Invalid value at '{where}': expected a Content object.", where)
        role = content.get("role")
        if role not in ROLES:
            raise invalid(f"Please use a valid role: user, model. Got '{role}' at {where}.", f"{where}.role")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise invalid(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.\n", where)
        text, results = _parts_text(parsed, parts, where, role, signed)
        if role in (None, "user") and text:
            parsed.prompt.user_text = text
    system = pick(body, "systemInstruction")
    if isinstance(system, str):
        system = {"parts": [{"text": system}]}
    if isinstance(system, Mapping):
        before = parsed.text_tokens
        parts = p if isinstance(p := system.get("parts"), list) else []
        parsed.system_text, _ = _parts_text(parsed, parts, "system_instruction", "system", False)
        parsed.system_tokens = parsed.text_tokens - before
    if results:
        parsed.prompt.tool_results = results
    parsed.prompt.tokens = parsed.text_tokens + sum(parsed.media_tokens.values())
    return parsed


def parse_tools(body: Mapping[str, Any], parsed: Parsed) -> None:
    """tools[].functionDeclarations and toolConfig -> Request.tools / tool_choice; tool JSON counts as prompt."""
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise invalid("Invalid value at 'tools': expected a list of Tool objects.", "tools")
    declared: list[Tool] = []
    for i, tool in enumerate(tools):
        decls = pick(tool, "functionDeclarations") or []
        for j, decl in enumerate(decls if isinstance(decls, list) else []):
            where = f"tools[{i}].function_declarations[{j}]"
            name = decl.get("name") if isinstance(decl, Mapping) else None
            if not isinstance(name, str) or not name:
                raise invalid(f"* GenerateContentRequest.{where}.name: Name cannot be empty.\n", f"{where}.name")
            raw_schema = pick(decl, "parametersJsonSchema")
            if raw_schema is None and "parameters" in decl:
                check_schema(decl["parameters"], f"{where}.parameters")
                raw_schema = lower_types(decl["parameters"])
            declared.append(Tool(name, raw_schema if isinstance(raw_schema, Mapping) else None))
    extra = count_json_tokens(tools)
    parsed.text_tokens += extra
    parsed.prompt.tokens += extra
    config = pick(pick(body, "toolConfig"), "functionCallingConfig")
    mode = str(pick(config, "mode") or "AUTO").upper()
    allowed = pick(config, "allowedFunctionNames")
    req = parsed.request
    req.tools = declared
    if mode == "NONE":
        req.tool_choice = "none"
        return
    if isinstance(allowed, list) and allowed:
        unknown = [n for n in allowed if n not in {t.name for t in declared}]
        if unknown:
            raise invalid(
                f"allowed_function_names contains '{unknown[0]}', which is not a declared function.",
                "tool_config.function_calling_config.allowed_function_names",
            )
        req.tools = [t for t in declared if t.name in allowed]
        if len(req.tools) == 1:
            req.tool_choice = {"name": req.tools[0].name}


def _number(config: Any, camel: str, low: float, high: float) -> None:
    value = pick(config, camel)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise invalid(
            f"Unable to submit request because it has a {camel} value of {value} but the supported range is from "
            f"{low} (inclusive) to {high} (inclusive).",
            f"generation_config.{camel}",
        )


def parse_generation_config(body: Mapping[str, Any], parsed: Parsed) -> int | None:
    """generationConfig -> max tokens, stop sequences, JSON mode; returns the thinking budget (None: default)."""
    config = pick(body, "generationConfig")
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise invalid("Invalid value at 'generation_config': expected an object.", "generation_config")
    _number(config, "temperature", 0.0, 2.0)
    _number(config, "topP", 0.0, 1.0)
    req = parsed.request
    max_tokens = pick(config, "maxOutputTokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise invalid(
                f"max_output_tokens must be a positive integer, got {max_tokens!r}.",
                "generation_config.max_output_tokens",
            )
        req.max_tokens = max_tokens
    stops = pick(config, "stopSequences")
    if isinstance(stops, list):
        req.stop = [s for s in stops if isinstance(s, str)]
    mime = pick(config, "responseMimeType") or "text/plain"
    schema = pick(config, "responseJsonSchema")
    plain_schema = pick(config, "responseSchema")
    if schema is None and plain_schema is not None:
        check_schema(plain_schema, "generation_config.response_schema")
        schema = lower_types(plain_schema)
    if schema is not None and mime != "application/json":
        raise invalid(
            "When response_schema or response_json_schema is set, response_mime_type must be application/json.",
            "generation_config.response_mime_type",
        )
    if mime == "application/json":
        req.json_mode = schema is None
        req.json_schema = schema if isinstance(schema, Mapping) else None
    thinking = pick(config, "thinkingConfig")
    budget = pick(thinking, "thinkingBudget")
    return budget if isinstance(budget, int) and not isinstance(budget, bool) and budget >= 0 else None


def parse_request(body: Mapping[str, Any], signed: bool) -> tuple[Parsed, int | None]:
    parsed = parse_contents(body, signed)
    parse_tools(body, parsed)
    budget = parse_generation_config(body, parsed)
    return parsed, budget


__all__ = ["GeminiError", "Parsed", "is_thinking_model", "parse_contents", "parse_request", "thought_signature"]
