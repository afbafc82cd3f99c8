"""Deterministic content: token counting, answers, JSON/tool-argument values from schemas, embeddings."""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Iterable, Mapping
from typing import Any

IMAGE_TOKENS = 85
QUOTED_WORDS = 8
_TOKEN_RE = re.compile(r"\s*\S+")
_FILLER = (
    "alpha", "bravo", "cloud", "delta", "echo", "forest", "garden", "harbor", "island", "jungle",
    "kernel", "lantern", "meadow", "needle", "orbit", "planet", "quartz", "river", "signal", "timber",
    "umbrella", "valley", "window", "xenon", "yellow", "zephyr", "amber", "breeze", "canyon", "dune",
    "ember", "fjord", "glacier", "horizon", "ivory", "jasper", "kite", "lagoon", "marble", "nectar",
    "oasis", "pebble", "quiver", "ripple", "summit", "tundra", "upland", "vortex", "willow", "yonder",
)  # fmt: skip


def split_tokens(text: str) -> list[str]:
    """One token = one whitespace-separated word, kept with its leading whitespace so pieces re-join exactly."""
    return _TOKEN_RE.findall(text)


def deltas_of(pieces: list[str], size: int = 3) -> list[list[str]]:
    """Tokens grouped the way most real APIs stream them: several to a delta (the last one may be shorter)."""
    return [pieces[i : i + size] for i in range(0, len(pieces), size)]


def count_tokens(text: str | None) -> int:
    """Token count of a text: its number of whitespace-separated words."""
    return len(text.split()) if text else 0


def count_json_tokens(value: Any) -> int:
    """Token count of a JSON value (tool schemas, tool-call arguments): words of its `json.dumps`."""
    return count_tokens(json.dumps(value, sort_keys=True)) if value is not None else 0


def _filler(seed: str, count: int) -> list[str]:
    if count <= 0:
        return []
    raw = hashlib.shake_256(seed.encode()).digest(count)
    return [_FILLER[b % len(_FILLER)] for b in raw]


def _fit(prefix: list[str], seed: str, n_tokens: int) -> str:
    if len(prefix) >= n_tokens:
        return " ".join(prefix[:n_tokens])
    return " ".join(prefix + _filler(seed, n_tokens - len(prefix)))


def answer_text(model: str, user_text: str, n_tokens: int) -> str:
    """The answer to a user message: exactly `n_tokens` words, a pure function of (model, message, n)."""
    words = user_text.split()
    quoted = words[:QUOTED_WORDS] or ["nothing."]
    if len(words) > QUOTED_WORDS:
        quoted[-1] += "..."
    prefix = ["Hello", "from", f"{model}.", "You", "said:", *quoted]
    return _fit(prefix, f"{model}\x00{user_text}", n_tokens)


def tool_result_answer(model: str, results: Iterable[str], n_tokens: int) -> str:
    """The answer after tool results: quotes the results, then filler, `n_tokens` words in all."""
    joined = "; ".join(r.strip() for r in results) or "nothing."
    prefix = ["Hello", "from", f"{model}.", "The", "tools", "returned:", *joined.split()]
    return _fit(prefix, f"{model}\x00tool\x00{joined}", n_tokens)


def truncate_at_stop(text: str, stops: Iterable[str]) -> tuple[str, bool]:
    """Cut `text` before the earliest stop sequence; returns (text, whether a stop matched)."""
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=-1)
    if cut < 0:
        return text, False
    return text[:cut].rstrip(), True


def _resolve_ref(ref: str, root: Mapping[str, Any]) -> Any:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        if not part:
            continue
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, Mapping) else {}
    return node


_STRING_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def value_for_schema(schema: Any, root: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """A placeholder value satisfying a JSON Schema: required properties (all if none listed), by type."""
    if not isinstance(schema, Mapping) or depth > 12:
        return "example"
    root = schema if root is None else root
    if isinstance(schema.get("$ref"), str):
        return value_for_schema(_resolve_ref(schema["$ref"], root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            return value_for_schema((non_null or options)[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        names = schema.get("required")
        names = list(props) if not isinstance(names, list) else names
        return {name: value_for_schema(props.get(name, {}), root, depth + 1) for name in names}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        return [value_for_schema(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _STRING_FORMATS.get(str(schema.get("format")), "example")


def json_answer(model: str, user_text: str, schema: Mapping[str, Any] | None) -> str:
    """JSON-mode content: an object satisfying `schema`, or a small fixed-shape object without one."""
    if schema is not None:
        value = value_for_schema(schema)
    else:
        value = {"model": model, "answer": answer_text(model, user_text, 12)}
    return json.dumps(value)


def tool_arguments(parameters: Mapping[str, Any] | None) -> str:
    """Tool-call arguments (a JSON string) generated from the tool's parameter schema."""
    value = value_for_schema(parameters) if parameters else {}
    return json.dumps(value if isinstance(value, dict) else {})


def embedding_dims(model: str) -> int:
    """Default vector length: 3072 for `*-large` models, 1536 otherwise (`*-small`, ada)."""
    return 3072 if "large" in model else 1536


def embedding(key: str, dims: int) -> list[float]:
    """A deterministic L2-normalised vector derived from a hash of `key`."""
    raw = hashlib.shake_256(key.encode()).digest(2 * dims)
    ints = struct.unpack(f"<{dims}h", raw)
    norm = math.sqrt(math.fsum(i * i for i in ints)) or 1.0
    return [i / norm for i in ints]


def pack_float32(vector: list[float]) -> bytes:
    """Little-endian float32 bytes (the wire form behind `encoding_format: base64`)."""
    return struct.pack(f"<{len(vector)}f", *vector)
