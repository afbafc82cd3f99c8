"""What a call cost in US dollars (Decimal), from the bundled genai-prices data — never fetched at run time."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import TypeGuard

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price, data_snapshot
from pydantic import TypeAdapter

from gateway.config import Price, ProviderKind
from gateway.policy_files import load_policy_file
from gateway.schema import Usage

log = logging.getLogger("gateway.pricing")

# our provider kinds -> genai-prices provider ids
_PROVIDER_IDS = MappingProxyType({"openai": "openai", "anthropic": "anthropic", "gemini": "google", "bedrock": "aws"})
_MILLION = Decimal(1_000_000)
_FLAT_TTL_S = 3600.0  # prices can change on a date: re-read a model's flat prices hourly


PriceTable = dict[ProviderKind, dict[str, Price]]


def load_price_table(path: str | Path) -> PriceTable:
    """`policies/prices.yaml`: {provider kind: {upstream model id: price}}; strict, errors name file and field."""
    return load_policy_file(path, _TABLE.validate_python)[0]


_TABLE = TypeAdapter(PriceTable)


def _flat(price: object) -> TypeGuard[Decimal | None]:
    return price is None or isinstance(price, Decimal)


class Pricer:
    """Prices usage by each provider's convention: genai-prices first, then the fallback `table`, then `default`
    if one is configured; otherwise a model has no price (None, never $0), and `has_price` says so up front.

    Flat per-token prices (most models) are read once per hour and applied directly, which costs
    a few µs; tiered or unusual prices go through `genai_prices.calc_price` (~0.1 ms). A unit
    test checks the two agree.
    """

    def __init__(
        self, table: Mapping[ProviderKind, Mapping[str, Price]] | None = None, default: Price | None = None
    ) -> None:
        self._table: dict[str, dict[str, Price]] = {kind: dict(models) for kind, models in (table or {}).items()}
        self._default = default
        self._known: dict[tuple[str, str], bool] = {}
        self._unknown: set[tuple[str, str]] = set()  # not in genai-prices
        self._warned: set[tuple[str, str]] = set()
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
            inp, read, write, out = mp.input_mtok, mp.cache_read_mtok, mp.cache_write_mtok, mp.output_mtok
            if isinstance(inp, Decimal) and _flat(read) and _flat(write) and _flat(out):  # no tiers
                prices = (inp, read, write, out or Decimal(0))
        except LookupError:
            prices = None
        self._flat[key] = (time.monotonic(), prices)
        return prices

    def has_price(self, provider_kind: str, model: str) -> bool:
        """Whether `model`'s calls can be charged (checked once per model, then cached)."""
        key = (provider_kind, model)
        if key not in self._known:
            self._known[key] = self.cost(provider_kind, model, Usage(input_tokens=1, output_tokens=1)) is not None
        return self._known[key]

    def linear(self, provider_kind: str, model: str) -> tuple[Decimal, Decimal] | None:
        """(input, output) dollars per million tokens when the price is flat (no tiers), else None."""
        if (provider_kind, model) in self._unknown:
            price = self._table.get(provider_kind, {}).get(model) or self._default
            return (price.input_mtok, price.output_mtok) if price is not None else None
        flat = self._flat_prices(_PROVIDER_IDS.get(provider_kind, provider_kind), model)
        return (flat[0], flat[3]) if flat is not None else None

    def cost(self, provider_kind: str, model: str, usage: Usage) -> Decimal | None:
        provider = _PROVIDER_IDS.get(provider_kind, provider_kind)
        key = (provider_kind, model)
        if key in self._unknown:
            return self._fallback(provider_kind, model, usage)
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
            return self._fallback(provider_kind, model, usage)
        return result.total_price

    def _fallback(self, provider_kind: str, model: str, usage: Usage) -> Decimal | None:
        price = self._table.get(provider_kind, {}).get(model) or self._default
        if price is None:
            if (provider_kind, model) not in self._warned:
                self._warned.add((provider_kind, model))
                log.warning("no price known for %s model %r (add it to the price table)", provider_kind, model)
            return None
        read, write = usage.cached_input_tokens, usage.cache_write_tokens
        read_price = price.cache_read_mtok if price.cache_read_mtok is not None else price.input_mtok
        write_price = price.cache_write_mtok if price.cache_write_mtok is not None else price.input_mtok
        total = (usage.input_tokens - read - write) * price.input_mtok + usage.output_tokens * price.output_mtok
        return (total + read * read_price + write * write_price) / _MILLION
