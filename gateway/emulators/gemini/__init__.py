"""The Gemini emulator: `/gemini/{v1|v1beta}/models/{model}:{method}`, as the google-genai SDK calls it."""

from __future__ import annotations

from aiohttp import web

from gateway.emulators.config import EmulatorContext
from gateway.emulators.gemini.common import GeminiCall, Handler, not_found, run
from gateway.emulators.gemini.embed import (
    batch_embed_contents,
    count_tokens_method,
    embed_content,
    get_model,
    list_models,
)
from gateway.emulators.gemini.generate import generate_content, stream_generate_content

PREFIX = "/gemini"
VERSION = "{version:v1|v1beta|v1alpha}"
METHODS: dict[str, Handler] = {
    "generateContent": generate_content,
    "streamGenerateContent": stream_generate_content,
    "batchEmbedContents": batch_embed_contents,
    "embedContent": embed_content,
    "countTokens": count_tokens_method,
}


async def _missing(call: GeminiCall) -> web.StreamResponse:
    raise not_found(call.request.path)


def register(app: web.Application, ctx: EmulatorContext, prefix: str = PREFIX) -> None:
    """Add the Gemini routes to `app`."""

    async def model_method(request: web.Request) -> web.StreamResponse:
        model, sep, method = request.match_info["target"].rpartition(":")
        handler = METHODS.get(method) if sep and model else None
        endpoint = method if handler else "not_found"
        return await run(request, ctx, endpoint, model or request.match_info["target"], method, handler or _missing)

    async def models(request: web.Request) -> web.StreamResponse:
        return await run(request, ctx, "models", "", "list", list_models)

    async def model(request: web.Request) -> web.StreamResponse:
        return await run(request, ctx, "models", request.match_info["target"], "get", get_model)

    async def missing(request: web.Request) -> web.StreamResponse:
        return await run(request, ctx, "not_found", "", "", _missing)

    app.router.add_post(f"{prefix}/{VERSION}/models/{{target}}", model_method)
    app.router.add_get(f"{prefix}/{VERSION}/models", models)
    app.router.add_get(f"{prefix}/{VERSION}/models/{{target}}", model)
    app.router.add_route("*", prefix + "/{tail:.*}", missing)


__all__ = ["PREFIX", "register"]
