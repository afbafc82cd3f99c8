"""The Anthropic emulator: the Messages API, token counting and models under `/anthropic/v1`.

Point the SDK at it with `anthropic.Anthropic(api_key="k", base_url=f"{emulator}/anthropic", max_retries=0)`.
"""

from __future__ import annotations

from aiohttp import web

from gateway.emulators.anthropic.messages import count_tokens, create_message, get_model, list_models, not_found
from gateway.emulators.anthropic.wire import OVERLOADED_MIDSTREAM, route
from gateway.emulators.config import EmulatorContext

PREFIX = "/anthropic"


def register(app: web.Application, ctx: EmulatorContext, prefix: str = PREFIX) -> None:
    """Add the Anthropic routes to `app`."""
    required = ("model", "messages")
    app.router.add_post(f"{prefix}/v1/messages", route(ctx, "messages", create_message, required))
    app.router.add_post(
        f"{prefix}/v1/messages/count_tokens", route(ctx, "messages.count_tokens", count_tokens, required)
    )
    app.router.add_get(f"{prefix}/v1/models", route(ctx, "models", list_models))
    app.router.add_get(f"{prefix}/v1/models/{{model_id}}", route(ctx, "models", get_model))
    app.router.add_route("*", prefix + "/{tail:.*}", route(ctx, "not_found", not_found))


__all__ = ["OVERLOADED_MIDSTREAM", "PREFIX", "register"]
