"""`POST /model/{modelId}/invoke` (Titan v2 / v1 and Cohere v3 embeddings) and `/count-tokens`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import secrets
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.emulators.bedrock.common import Call, send_json
from gateway.emulators.bedrock.converse import conversation
from gateway.emulators.bedrock.wire import BedrockError, validation
from gateway.emulators.faults import FaultKind
from gateway.emulators.text import count_tokens, embedding

TITAN_V2_DIMS = (256, 512, 1024)
COHERE_MAX_TEXTS = 96
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
COHERE_TYPES = ("float", "int8", "uint8", "binary", "ubinary")
TITAN_TYPES = ("float", "binary")


def _malformed(detail: str) -> BedrockError:
    return validation(f"Malformed input request: {detail}, please reformat your input and try again.")


def _tokens(text: str) -> int:
    return max(1, count_tokens(text))


def _vector(model: str, text: str, dims: int) -> list[float]:
    return embedding(f"bedrock\x00{model}\x00{text}", dims)


def _int8(vector: list[float]) -> list[int]:
    return [max(-128, min(127, round(v * 127 * math.sqrt(len(vector))))) for v in vector]


def _bits(vector: list[float], signed: bool) -> list[int]:
    out = []
    for i in range(0, len(vector), 8):
        byte = 0
        for v in vector[i : i + 8]:
            byte = (byte << 1) | (v > 0)
        out.append(byte - 128 if signed else byte)
    return out


def _check_context(call: Call, tokens: int) -> None:
    if tokens > call.ctx.settings.context_window:
        raise BedrockError.of(FaultKind.CONTEXT_LENGTH)


async def _send(call: Call, payload: Mapping[str, Any], tokens: int) -> web.StreamResponse:
    latency_ms = int(call.timing.latency_s * 1000)
    headers = {"x-amzn-bedrock-input-token-count": str(tokens), "x-amzn-bedrock-invocation-latency": str(latency_ms)}
    resp, outcome = await send_json(call, payload, headers)
    call.bill(tokens, 0, outcome=outcome)
    return resp


async def titan(call: Call, v2: bool) -> web.StreamResponse:
    body = call.body
    text = body.get("inputText")
    if not isinstance(text, str) or not text:
        raise _malformed(
            "#: required key [inputText] not found" if text is None else "#/inputText: expected type: String"
        )
    tokens = _tokens(text)
    _check_context(call, tokens)
    if not v2:
        return await _send(call, {"embedding": _vector(call.model, text, 1536), "inputTextTokenCount": tokens}, tokens)
    dims = body.get("dimensions", 1024)
    if dims not in TITAN_V2_DIMS or isinstance(dims, bool):
        raise _malformed(f"#/dimensions: {dims} is not a valid enum value")
    normalize = body.get("normalize", True)
    if not isinstance(normalize, bool):
        raise _malformed("#/normalize: expected type: Boolean")
    types = body.get("embeddingTypes", ["float"])
    if not isinstance(types, list) or not types or any(t not in TITAN_TYPES for t in types):
        raise _malformed(f"#/embeddingTypes: each item must be one of {list(TITAN_TYPES)}")
    vector = _vector(call.model, text, dims)
    if not normalize:  # a deterministic magnitude in [1, 10)
        scale = 1 + 9 * hashlib.sha256(text.encode()).digest()[0] / 256
        vector = [v * scale for v in vector]
    by_type: dict[str, Any] = {}
    for kind in types:
        by_type[kind] = vector if kind == "float" else [1 if v > 0 else 0 for v in vector]
    payload = {"embedding": vector, "inputTextTokenCount": tokens, "embeddingsByType": by_type}
    return await _send(call, payload, tokens)


async def cohere(call: Call) -> web.StreamResponse:
    body = call.body
    texts = body.get("texts")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise _malformed(
            "#: required key [texts] not found" if texts is None else "#/texts: expected type: JSONArray of String"
        )
    if len(texts) > COHERE_MAX_TEXTS:
        raise _malformed(f"#/texts: expected maximum item count: {COHERE_MAX_TEXTS}, found: {len(texts)}")
    input_type = body.get("input_type")
    if input_type is None:
        raise _malformed("#: required key [input_type] not found")
    if input_type not in COHERE_INPUT_TYPES:
        raise _malformed(f"#/input_type: {input_type} is not a valid enum value")
    truncate = body.get("truncate", "NONE")
    if truncate not in ("NONE", "START", "END"):
        raise _malformed(f"#/truncate: {truncate} is not a valid enum value")
    types = body.get("embedding_types")
    if types is not None and (not isinstance(types, list) or not types or any(t not in COHERE_TYPES for t in types)):
        raise _malformed(f"#/embedding_types: each item must be one of {list(COHERE_TYPES)}")
    dims = 384 if "light" in call.model else 1024
    tokens = sum(_tokens(t) for t in texts)
    _check_context(call, tokens)
    vectors = [_vector(call.model, f"{input_type}\x00{t}", dims) for t in texts]
    payload: dict[str, Any] = {"id": secrets.token_hex(16), "texts": texts}
    if types is None:
        payload.update(response_type="embeddings_floats", embeddings=vectors)
    else:
        convert = {
            "float": lambda v: v,
            "int8": _int8,
            "uint8": lambda v: [i + 128 for i in _int8(v)],
            "binary": lambda v: _bits(v, signed=True),
            "ubinary": lambda v: _bits(v, signed=False),
        }
        embeddings = {kind: [convert[kind](v) for v in vectors] for kind in types}
        payload.update(response_type="embeddings_by_type", embeddings=embeddings)
    return await _send(call, payload, tokens)


async def invoke(call: Call) -> web.StreamResponse:
    model = call.model
    if model.startswith("amazon.titan-embed-text-v2"):
        return await titan(call, v2=True)
    if model.startswith("amazon.titan-embed-text-v1") or model.startswith("amazon.titan-embed-g1-text"):
        return await titan(call, v2=False)
    if model.startswith("cohere.embed-"):
        return await cohere(call)
    raise validation(
        f"The emulator's InvokeModel supports Titan and Cohere embedding models only, not '{model}'. Use Converse."
    )


def _string_tokens(value: Any) -> int:
    if isinstance(value, str):
        return count_tokens(value)
    if isinstance(value, Mapping):
        return sum(_string_tokens(v) for v in value.values())
    if isinstance(value, list):
        return sum(_string_tokens(v) for v in value)
    return 0


async def count_tokens_handler(call: Call) -> web.StreamResponse:
    """`{"input":{"converse":{…}}}` -> the Converse prompt tokens; `{"input":{"invokeModel":{"body":b64}}}` -> words."""
    spec = call.body.get("input")
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise _malformed("'input' must hold exactly one of 'converse' or 'invokeModel'")
    if isinstance(spec.get("converse"), Mapping):
        conv = conversation(spec["converse"])
        tokens = conv.prompt.tokens + conv.req.tools_tokens
    elif isinstance(spec.get("invokeModel"), Mapping):
        try:
            decoded = json.loads(base64.b64decode(spec["invokeModel"].get("body", ""), validate=True))
        except (binascii.Error, ValueError, TypeError) as exc:
            raise _malformed("'input.invokeModel.body' must be base64-encoded JSON") from exc
        tokens = _string_tokens(decoded)
    else:
        raise _malformed("'input' must hold exactly one of 'converse' or 'invokeModel'")
    resp, _ = await send_json(call, {"inputTokens": tokens})
    return resp
