"""What a call cost in US dollars (Decimal), from the bundled genai-prices data — never fetched at run time."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price, data_snapshot

from gateway.schema import Usage

log = logging.getLogger("gateway.pricing")

# our provider kinds -> genai-prices provider ids
_PROVIDER_IDS = MappingProxyType({"openai": "openai", "anthropic": "anthropic", "gemini": "google", "bedrock": "aws"})
_MILLION = Decimal(1_000_000)
_FLAT_TTL_S = 3600.0  # prices can change on a date: re-read a model's flat prices hourly


class Pricer:
    """Prices usage by each provider's convention; an unknown model has no price (None), never $0.

    Flat per-token prices (most models) are read once per hour and applied directly, which costs
    a few µs; tiered or unusual prices go through `genai_prices.calc_price` (~0.1 ms). A unit
    test checks the two agree.
    """

    def __init__(self) -> None:
        self._unknown: set[tuple[str, str]] = set()
        self._flat: dict[
            tuple[str, str], tuple[float, tuple[Decimal, Decimal | None, Decimal | None, Decimal] | None]
        ] = {}

    def _flat_prices(self, provider: str, model: str) -> tuple[Decimal, Decimal | None, Decimal | None, Decimal] | None:
        key = (provider, model)
        cached = self._flat.get(key)
        if cached is not None and time.monotonic() - cached[0] < _FLAT_TTL_S:
            return cached[1]
        prices = None
        try:
            _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
            mp = info.get_prices(datetime.now(tz=UTC))
            values = (mp.input_mtok, mp.cache_read_mtok, mp.cache_write_mtok, mp.output_mtok)
            if all(v is None or isinstance(v, Decimal) for v in values) and mp.input_mtok is not None:
                prices = (mp.input_mtok, mp.cache_read_mtok, mp.cache_write_mtok, mp.output_mtok or Decimal(0))
        except LookupError:
            prices = None
        self._flat[key] = (time.monotonic(), prices)
        return prices

    def cost(self, provider_kind: str, model: str, usage: Usage) -> Decimal | None:
        provider = _PROVIDER_IDS.get(provider_kind, provider_kind)
        key = (provider_kind, model)
        if key in self._unknown:
            return None
        flat = self._flat_prices(provider, model)
        read, write = usage.cached_input_tokens, usage.cache_write_tokens
        if flat is not None and (read == 0 or flat[1] is not None) and (write == 0 or flat[2] is not None):
            in_price, read_price, write_price, out_price = flat
            total = (usage.input_tokens - read - write) * in_price + usage.output_tokens * out_price
            total += read * (read_price or 0) + write * (write_price or 0)
            return total / _MILLION
        try:
            result = calc_price(
                PriceUsage(
                    input_tokens=usage.input_tokens,  # genai-prices: total input, cache reads/writes included
                    cache_read_tokens=read or None,
                    cache_write_tokens=write or None,
                    output_tokens=usage.output_tokens,
                ),
                model_ref=model,
                provider_id=provider,
            )
        except LookupError:
            self._unknown.add(key)
            log.warning("no price known for %s model %r: its calls are reported with cost null", provider_kind, model)
            return None
        return result.total_price
