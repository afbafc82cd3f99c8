"""The normalized embeddings request and response."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gateway.schema.chat import GatewayMetadata
from gateway.schema.usage import Usage


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    texts: tuple[str, ...] = Field(min_length=1, max_length=2048)
    dimensions: int | None = Field(default=None, ge=1)
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
