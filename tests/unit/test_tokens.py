"""Prompt token estimates: real BPE counts offline, the chat framing, tools, images, and other providers' margins."""

from __future__ import annotations

import math

import bpe_openai
import pytest

from gateway.config import ModelEntry
from gateway.schema import ChatRequest
from gateway.tokens import IMAGE_TOKENS, LOW_DETAIL_TOKENS, TokenEstimator

O200K = bpe_openai.get_encoding("o200k_base")
GPT4O = ModelEntry(provider="openai", upstream="gpt-4o-mini")
CLAUDE = ModelEntry(provider="anthropic", upstream="claude-haiku-4-5")


def _n(text: str) -> int:
    return len(O200K.encode_ordinary(text))


@pytest.fixture(scope="module")
def estimator() -> TokenEstimator:
    return TokenEstimator()


def _chat(*messages, **kw) -> ChatRequest:
    return ChatRequest(model="auto", messages=list(messages), **kw)


def test_a_chat_counts_its_text_in_the_chat_framing(estimator):
    request = _chat({"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello, world."})
    expected = 3 + (4 + _n("You are terse.")) + (4 + _n("Say hello, world."))
    assert estimator.prompt_tokens(request, GPT4O, "openai") == expected
    assert estimator.count_text("hello world") == 2


def test_the_encoding_follows_the_model(estimator):
    text = "Größenordnung 東京 😀 " * 20  # tokenizes differently in cl100k and o200k
    cl100k = len(bpe_openai.get_encoding("cl100k_base").encode_ordinary(text))
    assert cl100k != _n(text)
    assert estimator.count_text(text, "openai", "gpt-4") == cl100k
    assert estimator.count_text(text, "openai", "o4-mini") == _n(text)  # unknown to the table: o200k


def test_a_stream_counter_counts_as_count_text_for_its_model_and_remembers_no_wrong_count():
    """The relay counts each delta with a per-model counter that remembers short texts: the same text gives the
    same count on either encoding (a count remembered for o200k is not reused for cl100k), long texts included."""
    estimator = TokenEstimator()
    o200k, cl100k = estimator.counter("anthropic", "claude-haiku-4-5"), estimator.counter("openai", "gpt-4")
    texts = ["", " the", " 東京", "😀", " hello", "Größenordnung 東京 😀 " * 20, " the", "😀", " 東京"]
    for text in texts * 2:
        assert o200k(text) == estimator.count_text(text) == _n(text)
        assert cl100k(text) == estimator.count_text(text, "openai", "gpt-4")
    assert o200k("😀😀😀") != cl100k("😀😀😀")  # the two encodings differ, and their remembered counts stay apart


def test_other_providers_get_the_count_times_their_margin(estimator):
    request = _chat({"role": "user", "content": "How many tokens is this sentence, roughly? " * 10})
    base = estimator.prompt_tokens(request, GPT4O, "openai")
    assert estimator.prompt_tokens(request, CLAUDE, "anthropic") == math.ceil(base * 1.2)
    assert TokenEstimator({"anthropic": 1.5}).prompt_tokens(request, CLAUDE, "anthropic") == math.ceil(base * 1.5)


def test_tools_schemas_and_images_count(estimator):
    plain = _chat({"role": "user", "content": "weather?"})
    tool = {"name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}  # fmt: skip
    with_tool = _chat({"role": "user", "content": "weather?"}, tools=[tool])
    assert estimator.prompt_tokens(with_tool, GPT4O, "openai") > estimator.prompt_tokens(plain, GPT4O, "openai") + 10
    image = {"type": "image", "url": "https://example.invalid/a.png"}
    low = {**image, "detail": "low"}
    pictured = _chat({"role": "user", "content": [{"type": "text", "text": "weather?"}, image, low]})
    base = estimator.prompt_tokens(plain, GPT4O, "openai")
    assert estimator.prompt_tokens(pictured, GPT4O, "openai") == base + IMAGE_TOKENS["openai"] + LOW_DETAIL_TOKENS
    gemini = ModelEntry(provider="gemini", upstream="gemini-2.5-flash")
    assert estimator.prompt_tokens(pictured, gemini, "gemini") - estimator.prompt_tokens(plain, gemini, "gemini") == (
        IMAGE_TOKENS["gemini"] + LOW_DETAIL_TOKENS
    )


def test_tool_calls_and_json_schemas_count(estimator):
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'}]}  # fmt: skip
    result = {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"}
    request = _chat({"role": "user", "content": "weather?"}, call, result)
    assert estimator.prompt_tokens(request, GPT4O, "openai") >= 3 + 3 * 4 + _n("weather?") + _n('{"city": "Paris"}')
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    fmt = _chat({"role": "user", "content": "x"}, response_format={"type": "json_schema", "json_schema": schema})
    plain = _chat({"role": "user", "content": "x"})
    assert estimator.prompt_tokens(fmt, GPT4O, "openai") > estimator.prompt_tokens(plain, GPT4O, "openai")
