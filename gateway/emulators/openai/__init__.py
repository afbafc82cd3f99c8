"""The OpenAI emulator: mounts chat completions, responses, embeddings and models under `/openai/v1`."""

from __future__ import annotations

from aiohttp import web

from gateway.emulators.config import EmulatorContext
from gateway.emulators.openai.chat import chat_completions
from gateway.emulators.openai.common import route
from gateway.emulators.openai.embeddings import embeddings, list_models, not_found
from gateway.emulators.openai.responses import create_response

PREFIX = "/openai/v1"


def register(app: web.Application, ctx: EmulatorContext, prefix: str = PREFIX) -> None:
    """Add the OpenAI routes to `app`."""
    app.router.add_post(
        f"{prefix}/chat/completions", route(ctx, "chat.completions", chat_completions, ("model", "messages"))
    )
    app.router.add_post(f"{prefix}/responses", route(ctx, "responses", create_response, ("model", "input")))
    app.router.add_post(f"{prefix}/embeddings", route(ctx, "embeddings", embeddings, ("model", "input")))
    app.router.add_get(f"{prefix}/models", route(ctx, "models", list_models))
    app.router.add_route("*", prefix + "/{tail:.*}", route(ctx, "not_found", not_found))


__all__ = ["PREFIX", "register"]
