"""`:batchEmbedContents`, `:embedContent`, `:countTokens` and the model listing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.emulators.call import send_json
from gateway.emulators.gemini.common import GeminiCall
from gateway.emulators.gemini.contents import parse_contents, parse_tools
from gateway.emulators.gemini.wire import invalid, pick
from gateway.emulators.text import count_tokens, embedding

TASK_TYPES = (
    "TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY", "CLASSIFICATION",
    "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY",
)  # fmt: skip
GENERATE_METHODS = ("generateContent", "streamGenerateContent", "countTokens")
MODELS = (
    ("gemini-2.5-pro", 1_048_576, list(GENERATE_METHODS)),
    ("gemini-2.5-flash", 1_048_576, list(GENERATE_METHODS)),
    ("gemini-2.0-flash", 1_048_576, list(GENERATE_METHODS)),
    ("gemini-embedding-001", 2_048, ["embedContent", "batchEmbedContents", "countTokens"]),
    ("text-embedding-004", 2_048, ["embedContent", "batchEmbedContents"]),
)


def embedding_dims(model: str) -> int:
    """Default vector length: 3072 for gemini-embedding-*, 768 for text-embedding-004 / embedding-001."""
    return 3072 if "gemini-embedding" in model else 768


def _embed_one(call: GeminiCall, item: Any, where: str) -> tuple[list[float], int]:
    if not isinstance(item, Mapping):
        raise invalid(f"Invalid value at '{where}': expected an EmbedContentRequest.", where)
    content = item.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    if not isinstance(parts, list) or not parts:
        raise invalid(f"* BatchEmbedContentsRequest.{where}.content.parts: contents.parts must not be empty.\n", where)
    text = " ".join(p["text"] for p in parts if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    task = pick(item, "taskType") or "TASK_TYPE_UNSPECIFIED"
    if task not in TASK_TYPES:
        raise invalid(f"Invalid value at '{where}.task_type' (TaskType), \"{task}\"", f"{where}.task_type")
    full = embedding_dims(call.model)
    dims = pick(item, "outputDimensionality")
    if dims is None:
        dims = full
    elif isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= full:
        raise invalid(
            f"* {where}.output_dimensionality: must be an integer in [1, {full}], got {dims!r}.\n",
            f"{where}.output_dimensionality",
        )
    # shake-256 prefixes: a shorter vector is the re-normalised head of the full one (Matryoshka-like).
    return embedding(f"{call.model}\x00{task}\x00{pick(item, 'title') or ''}\x00{text}", dims), count_tokens(text)


async def batch_embed_contents(call: GeminiCall) -> web.StreamResponse:
    requests = call.body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise invalid("* BatchEmbedContentsRequest.requests: requests must not be empty.\n", "requests")
    vectors = [_embed_one(call, item, f"requests[{i}]") for i, item in enumerate(requests)]
    tokens = sum(n for _, n in vectors)
    resp, outcome = await send_json(call, {"embeddings": [{"values": v} for v, _ in vectors]})
    call.bill(tokens, 0, outcome=outcome)
    return resp


async def embed_content(call: GeminiCall) -> web.StreamResponse:
    vector, tokens = _embed_one(call, call.body, "request")
    resp, outcome = await send_json(call, {"embedding": {"values": vector}})
    call.bill(tokens, 0, outcome=outcome)
    return resp


async def count_tokens_method(call: GeminiCall) -> web.StreamResponse:
    """`{"contents"}` or `{"generateContentRequest"}`: the promptTokenCount generateContent would report."""
    body = pick(call.body, "generateContentRequest")
    if not isinstance(body, Mapping):
        body = call.body
    parsed = parse_contents(body, signed=False)
    parse_tools(body, parsed)
    payload = {"totalTokens": parsed.prompt.tokens, "promptTokensDetails": parsed.details()}
    return web.json_response(payload, headers=call.headers())


def model_info(name: str, limit: int, methods: list[str]) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name,
        "inputTokenLimit": limit,
        "outputTokenLimit": 65_536 if "embedding" not in name else 1,
        "supportedGenerationMethods": methods,
    }


async def list_models(call: GeminiCall) -> web.StreamResponse:
    models = [model_info(*m) for m in MODELS]
    return web.json_response({"models": models}, headers=call.headers())


async def get_model(call: GeminiCall) -> web.StreamResponse:
    found = next((m for m in MODELS if m[0] == call.model), None)
    generic = (call.model, call.ctx.settings.context_window, list(GENERATE_METHODS))
    info = model_info(*(found or generic))
    return web.json_response(info, headers=call.headers())
