"""The Bedrock runtime emulator: Converse, ConverseStream (binary event stream), InvokeModel embeddings, CountTokens.

Mounted under `/bedrock`, so `boto3.client("bedrock-runtime", endpoint_url=f"{base}/bedrock", ...)` works as is.
"""

from __future__ import annotations

from aiohttp import web

from gateway.emulators.bedrock.common import route, unknown_operation
from gateway.emulators.bedrock.converse import converse, converse_stream
from gateway.emulators.bedrock.invoke import count_tokens_handler, invoke
from gateway.emulators.config import EmulatorContext

PREFIX = "/bedrock"
MODEL = "/model/{model_id:.+}"


def register(app: web.Application, ctx: EmulatorContext, prefix: str = PREFIX) -> None:
    """Add the Bedrock runtime routes to `app`."""
    app.router.add_post(f"{prefix}{MODEL}/converse", route(ctx, "converse", converse))
    app.router.add_post(f"{prefix}{MODEL}/converse-stream", route(ctx, "converse-stream", converse_stream))
    app.router.add_post(f"{prefix}{MODEL}/invoke", route(ctx, "invoke", invoke))
    app.router.add_post(f"{prefix}{MODEL}/count-tokens", route(ctx, "count-tokens", count_tokens_handler))
    app.router.add_route("*", prefix + "/{tail:.*}", route(ctx, "unknown", unknown_operation))


__all__ = ["PREFIX", "register"]
