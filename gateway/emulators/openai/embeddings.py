"""`POST /embeddings` (float and base64 vectors), `GET /models` and the JSON 404 for unknown paths."""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from gateway.emulators.faults import FaultKind
from gateway.emulators.openai.common import Call, send_json
from gateway.emulators.openai.wire import OpenAIError, context_length_error
from gateway.emulators.text import count_tokens, embedding, embedding_dims, pack_float32

MODELS = (
    "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o1", "o3", "o3-mini", "o4-mini",
    "text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002",
)  # fmt: skip
MODELS_CREATED = 1_700_000_000


def _inputs(raw: Any) -> list[tuple[str, int]]:
    """(hash key, token count) per input: a string, a list of strings, a token array or a list of them."""
    if isinstance(raw, str):
        raw = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise OpenAIError(FaultKind.INVALID_REQUEST, "'input' must be a non-empty string or array.", "input")
    items: list[tuple[str, int]] = []
    for item in raw:
        if isinstance(item, str):
            items.append((item, count_tokens(item)))
        elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
            items.append((json.dumps(item), len(item)))
        else:
            raise OpenAIError(
                FaultKind.INVALID_REQUEST, "Each 'input' item must be a string or a token array.", "input"
            )
    return items


async def embeddings(call: Call) -> web.StreamResponse:
    body = call.body
    items = _inputs(body.get("input"))
    dims = body.get("dimensions")
    if dims is None:
        dims = embedding_dims(call.model)
    elif not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 3072:
        raise OpenAIError(FaultKind.INVALID_REQUEST, "'dimensions' must be an integer in [1, 3072].", "dimensions")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise OpenAIError(
            FaultKind.INVALID_REQUEST, "'encoding_format' must be 'float' or 'base64'.", "encoding_format"
        )
    tokens = sum(n for _, n in items)
    if tokens > call.ctx.settings.context_window:
        raise context_length_error(call.ctx, tokens, "input")
    data = []
    for index, (key, _) in enumerate(items):
        vector = embedding(key, dims)
        value: Any = vector if fmt == "float" else base64.b64encode(pack_float32(vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    payload = {
        "object": "list",
        "data": data,
        "model": call.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    resp, outcome = await send_json(call, payload)
    call.bill(tokens, 0, outcome=outcome)
    return resp


async def not_found(call: Call) -> web.StreamResponse:
    raise OpenAIError(FaultKind.NOT_FOUND, f"Invalid URL ({call.request.method} {call.request.path}).")


async def list_models(call: Call) -> web.StreamResponse:
    data = [{"id": m, "object": "model", "created": MODELS_CREATED, "owned_by": "openai"} for m in MODELS]
    return web.json_response({"object": "list", "data": data}, headers=call.headers())
