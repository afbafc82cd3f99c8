"""What a call cost in US dollars (Decimal), from the bundled genai-prices data — never fetched at run time."""

from __future__ import annotations

import logging
from decimal import Decimal
from types import MappingProxyType

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from gateway.schema import Usage

log = logging.getLogger("gateway.pricing")

# our provider kinds -> genai-prices provider ids
_PROVIDER_IDS = MappingProxyType({"openai": "openai", "anthropic": "anthropic", "gemini": "google", "bedrock": "aws"})


class Pricer:
    """Prices usage by each provider's convention; an unknown model has no price (None), never $0."""

    def __init__(self) -> None:
        self._unknown: set[tuple[str, str]] = set()

    def cost(self, provider_kind: str, model: str, usage: Usage) -> Decimal | None:
        key = (provider_kind, model)
        if key in self._unknown:
            return None
        try:
            result = calc_price(
                PriceUsage(
                    input_tokens=usage.input_tokens,  # genai-prices: total input, cache reads/writes included
                    cache_read_tokens=usage.cached_input_tokens or None,
                    cache_write_tokens=usage.cache_write_tokens or None,
                    output_tokens=usage.output_tokens,
                ),
                model_ref=model,
                provider_id=_PROVIDER_IDS.get(provider_kind, provider_kind),
            )
        except LookupError:
            self._unknown.add(key)
            log.warning("no price known for %s model %r: its calls are reported with cost null", provider_kind, model)
            return None
        return result.total_price
