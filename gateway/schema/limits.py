"""Rate limits as a caller's key record or the limits policy declares them (per minute, and streams at once)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LimitSpec(BaseModel):
    """Per-minute limits and a concurrency limit; each becomes a bucket of one minute's worth, refilled
    continuously (`gateway.limits.bucket`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    input_tpm: int | None = Field(default=None, ge=1)
    output_tpm: int | None = Field(default=None, ge=1)
    concurrent: int | None = Field(default=None, ge=1)  # calls and streams in flight at once

    @model_validator(mode="after")
    def _some(self) -> LimitSpec:
        if not any(v is not None for v in (self.rpm, self.tpm, self.input_tpm, self.output_tpm, self.concurrent)):
            raise ValueError("a limit needs at least one of rpm, tpm, input_tpm, output_tpm, concurrent")
        return self


@dataclass(frozen=True, slots=True)
class RateStatus:
    """Where a caller stands on its tightest request limit and its tightest token limit (the `x-ratelimit-*`
    headers of an answer or a refusal); None: no such limit applies. A dataclass: one is made per call."""

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset_ms: int | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset_ms: int | None = None
