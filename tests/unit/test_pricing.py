"""Prices from the bundled genai-prices data, by the gateway's usage convention."""

from decimal import Decimal

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from gateway.pricing import Pricer
from gateway.schema import Usage


def test_cached_input_is_cheaper_and_money_is_decimal():
    pricer = Pricer()
    plain = pricer.cost("openai", "gpt-4o-mini", Usage(input_tokens=1000))
    cached = pricer.cost("openai", "gpt-4o-mini", Usage(input_tokens=1000, cached_input_tokens=200))
    assert isinstance(cached, Decimal)
    assert plain == Decimal("0.00015")  # $0.15 per million input tokens
    assert cached == Decimal("0.000135")  # 200 of them at the cached rate ($0.075 per million)


def test_output_and_dated_model_ids():
    pricer = Pricer()
    assert pricer.cost("openai", "gpt-4o-mini", Usage(output_tokens=1_000_000)) == Decimal("0.6")
    assert pricer.cost("openai", "gpt-4o-mini-2024-07-18", Usage(input_tokens=10)) == Decimal("0.0000015")


def test_unknown_model_has_no_price_not_zero():
    assert Pricer().cost("openai", "made-up-model-x", Usage(input_tokens=5, output_tokens=5)) is None


@pytest.mark.parametrize(
    ("kind", "model"),
    [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("openai", "text-embedding-3-small"), ("openai", "o4-mini"),
     ("anthropic", "claude-haiku-4-5"), ("anthropic", "claude-sonnet-4-5"), ("gemini", "gemini-2.5-flash"),
     ("gemini", "gemini-2.5-pro"), ("bedrock", "anthropic.claude-3-haiku-20240307-v1:0")],
)  # fmt: skip
@pytest.mark.parametrize(
    "usage",
    [Usage(input_tokens=1234, output_tokens=567), Usage(input_tokens=5000, cached_input_tokens=4096, output_tokens=10),
     Usage(input_tokens=3000, cache_write_tokens=2000, output_tokens=1),
     Usage(input_tokens=250_000, output_tokens=9000)],
)  # fmt: skip
def test_fast_flat_prices_agree_with_genai_prices(kind, model, usage):
    provider = {"gemini": "google", "bedrock": "aws"}.get(kind, kind)
    try:
        expected = calc_price(PriceUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                                         cache_read_tokens=usage.cached_input_tokens or None,
                                         cache_write_tokens=usage.cache_write_tokens or None),
                              model_ref=model, provider_id=provider).total_price  # fmt: skip
    except LookupError:
        pytest.skip(f"genai-prices has no {provider} {model}")
    assert Pricer().cost(kind, model, usage) == expected


def test_the_fallback_table_prices_what_genai_prices_lacks():
    from pathlib import Path

    from gateway.pricing import load_price_table

    table = load_price_table(Path(__file__).parents[2] / "policies" / "prices.yaml")
    pricer = Pricer(table)
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000)
    assert Pricer().cost("bedrock", "mistral.mistral-large-2407-v1:0", usage) is None
    assert pricer.cost("bedrock", "mistral.mistral-large-2407-v1:0", usage) == Decimal("5.00")  # 2.00 + 0.5 * 6.00
    assert pricer.cost("bedrock", "cohere.embed-english-v3", Usage(input_tokens=2_000_000)) == Decimal("0.20")
    assert pricer.has_price("bedrock", "cohere.embed-english-v3") and not pricer.has_price("openai", "mystery")


def test_a_configured_default_prices_unknown_models_and_money_stays_decimal():
    from gateway.config import Price

    pricer = Pricer(default=Price(input_mtok=Decimal("1.5"), output_mtok=Decimal("3")))
    cost = pricer.cost("openai", "mystery", Usage(input_tokens=3, output_tokens=7))
    assert isinstance(cost, Decimal) and cost == Decimal("0.0000255") and pricer.has_price("openai", "mystery")


def test_a_bad_price_table_names_the_field(tmp_path):
    from gateway.config import ConfigError
    from gateway.pricing import load_price_table

    bad = tmp_path / "prices.yaml"
    bad.write_text("bedrock:\n  some-model: {input_mtok: -1}\n")
    with pytest.raises(ConfigError, match=r"bedrock\.some-model\.input_mtok"):
        load_price_table(bad)


async def test_unpriced_candidates_are_skipped_and_a_request_for_one_is_refused():
    from gateway.config import ModelEntry
    from gateway.pipeline import Pipeline
    from gateway.schema import ChatRequest, GatewayError
    from tests.unit.test_pipeline import FakeProvider, FakeRegistry

    class Catalog(FakeRegistry):
        catalog = {"m": ModelEntry(provider="fake", upstream="gpt-4o-mini"),
                   "odd": ModelEntry(provider="fake", upstream="mystery-model")}  # fmt: skip

    pipeline = Pipeline(Catalog(FakeProvider([])), Pricer())
    request = ChatRequest(model="odd", messages=[{"role": "user", "content": "x"}], fallbacks=["m"])
    plan = pipeline.plan(request)
    assert [c.model for c in plan.candidates] == ["m"] and plan.skipped[0][0] == "odd"
    with pytest.raises(GatewayError) as info:
        pipeline.plan(request.model_copy(update={"fallbacks": ()}))
    assert info.value.code == "model_unpriced" and "price" in info.value.message
