"""The normalized embeddings request and response."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.schema.chat import GatewayMetadata
from gateway.schema.limits import RateStatus
from gateway.schema.usage import Usage


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    texts: tuple[str, ...] = Field(min_length=1, max_length=2048)
    dimensions: int | None = Field(default=None, ge=1)
    # What the vectors are for, where the provider tunes for it (Gemini task type, Cohere input type).
    input_type: Literal["document", "query", "classification", "clustering"] | None = None
    metadata: GatewayMetadata = GatewayMetadata()


class EmbeddingsResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    vectors: tuple[tuple[float, ...], ...]
    dimensions: int
    model: str
    upstream_model: str
    provider: str
    usage: Usage
    latency_ms: float = 0.0
    attempts: int = 1
    route: str | None = None
    rate: RateStatus | None = None  # where the caller stands on its rate limits (x-ratelimit-* headers)
    safety: str | None = None  # each guard's verdict on the inputs (x-gateway-safety), when guards ran
    cost_usd: Decimal | None = None
