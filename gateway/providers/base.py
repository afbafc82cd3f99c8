"""The provider seam: what every adapter offers, and the catalog target it is called with."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config import ModelEntry
from gateway.schema import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ErrorKind,
    GatewayError,
    StreamEvent,
    Usage,
)


@dataclass(frozen=True, slots=True)
class Target:
    """One catalog model on one provider: the public name and how the provider knows it."""

    name: str
    provider: str
    entry: ModelEntry

    @property
    def upstream(self) -> str:
        return self.entry.upstream


def new_id(prefix: str = "gw") -> str:
    """An id for an answer or stream the provider did not name."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def provider_error(
    provider: str, kind: ErrorKind, message: str, target: Target, usage: Usage | None = None, **kw: Any
) -> GatewayError:
    """An adapter's own finding about an answer (truncated, filtered, malformed), with what was billed."""
    return GatewayError(kind, f"{provider}: {message}", provider=provider, model=target.name, usage=usage, **kw)


class Provider(Protocol):
    """An adapter translates only: request → native call, native answer → normalized, SDK errors → GatewayError.

    Retries, fallbacks, breakers, budgets and telemetry wrap adapters from outside. `stream`
    yields a StartEvent once the upstream accepted the call, then deltas, then exactly one
    FinishEvent — or raises GatewayError (truncated_stream when the terminal marker is missing).
    """

    name: str

    async def complete(self, request: ChatRequest, target: Target) -> ChatResponse: ...

    def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamEvent]: ...

    async def embed(self, request: EmbeddingsRequest, target: Target) -> EmbeddingsResponse: ...

    def unsupported(self, request: ChatRequest | EmbeddingsRequest, target: Target) -> str | None:
        """Why this adapter cannot take `request` as sent (None: it can), without a call: planning skips such a
        candidate with this reason, so another one serves the request instead of a 400."""
        ...

    async def aclose(self) -> None: ...


class TokenCounter(Protocol):
    """Optional: adapters whose provider counts prompt tokens itself (Anthropic, Gemini) also offer this."""

    async def count_tokens(self, request: ChatRequest, target: Target) -> int: ...
