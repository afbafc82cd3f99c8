"""Token usage as the gateway counts it, one convention for every provider."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Usage(BaseModel):
    """Tokens of one call.

    Convention (OpenAI's): `input_tokens` is the whole prompt and includes `cached_input_tokens`
    and `cache_write_tokens`; `output_tokens` is everything generated and includes
    `reasoning_tokens`. Adapters convert each provider's own convention into this one.
    """

    model_config = ConfigDict(frozen=True)

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cached_input_tokens: int = Field(default=0, ge=0)
    cache_write_tokens: int = Field(default=0, ge=0)
    reasoning_tokens: int = Field(default=0, ge=0)

    @classmethod
    def cache_exclusive(cls, uncached_input: int, output: int, cache_read: int, cache_write: int) -> Usage:
        """From a provider whose input count excludes cache reads and writes (Anthropic, Bedrock)."""
        return cls(input_tokens=uncached_input + cache_read + cache_write, output_tokens=output,
                   cached_input_tokens=cache_read, cache_write_tokens=cache_write)  # fmt: skip

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )
