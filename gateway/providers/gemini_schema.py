"""Turning a tool's JSON Schema into the OpenAPI subset Gemini's `parameters` accepts."""

from __future__ import annotations

from typing import Any

_DROP = frozenset({"$schema", "$id", "$comment", "additionalProperties", "unevaluatedProperties", "patternProperties",
                   "dependentRequired", "dependentSchemas", "examples", "default", "title", "readOnly", "writeOnly",
                   "deprecated", "contentEncoding", "contentMediaType", "if", "then", "else", "not"})  # fmt: skip
_STRING_FORMATS = frozenset({"enum", "date-time"})


def sanitize_schema(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A copy of `schema` Gemini accepts: `$ref`s inlined, unsupported keywords dropped or rewritten.

    `exclusiveMinimum/Maximum` become `minimum/maximum`, `const` becomes a one-value `enum`,
    `anyOf [X, {"type": "null"}]` and `type: [X, "null"]` become `X` with `nullable: true`.
    """
    if depth > 32 or not isinstance(schema, dict):
        return schema
    defs = {**(defs or {}), **schema.get("$defs", {}), **schema.get("definitions", {})}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in defs:
        merged = {**defs[ref.rsplit("/", 1)[-1]], **{k: v for k, v in schema.items() if k != "$ref"}}
        return sanitize_schema(merged, defs, depth + 1)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP or key in ("$defs", "definitions", "$ref"):
            continue
        if key == "exclusiveMinimum" and isinstance(value, int | float):
            out["minimum"] = value
        elif key == "exclusiveMaximum" and isinstance(value, int | float):
            out["maximum"] = value
        elif key == "const":
            out["enum"] = [value]
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {name: sanitize_schema(sub, defs, depth + 1) for name, sub in value.items()}
        elif key in ("items", "additionalItems") and isinstance(value, dict):
            out["items"] = sanitize_schema(value, defs, depth + 1)
        elif key in ("anyOf", "oneOf") and isinstance(value, list):
            options = [o for o in value if not (isinstance(o, dict) and o.get("type") == "null")]
            if len(options) < len(value):
                out["nullable"] = True
            if len(options) == 1:
                out.update(sanitize_schema(options[0], defs, depth + 1))
            else:
                out["anyOf"] = [sanitize_schema(o, defs, depth + 1) for o in options]
        elif key == "allOf" and isinstance(value, list):
            for part in value:
                out.update(sanitize_schema(part, defs, depth + 1))
        elif key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            if len(kinds) < len(value):
                out["nullable"] = True
            out["type"] = kinds[0] if len(kinds) == 1 else value
        elif key == "format" and schema.get("type") == "string" and value not in _STRING_FORMATS:
            continue
        else:
            out[key] = value
    return out
