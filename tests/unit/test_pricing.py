"""Prices from the bundled genai-prices data, by the gateway's usage convention."""

from decimal import Decimal

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
