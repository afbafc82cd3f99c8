"""The Bedrock emulator (to be built): mounts its routes under its own path prefix."""

from __future__ import annotations

from aiohttp import web

from gateway.emulators.config import EmulatorContext

PREFIX = "/bedrock"


def register(app: web.Application, ctx: EmulatorContext, prefix: str = PREFIX) -> None:
    """Add the Bedrock routes to `app` (none yet)."""


__all__ = ["PREFIX", "register"]
