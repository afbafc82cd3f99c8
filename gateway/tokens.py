"""Prompt token estimates before a call, offline: real BPE counts (o200k / cl100k from the bundled `bpe-openai`
data) for OpenAI models, the same count times a safety margin for providers with other tokenizers."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

import bpe_openai

from gateway.config import GatewayConfig, ModelEntry
from gateway.schema import ChatRequest, ImagePart

# How much larger than the o200k count another provider's count can be (its tokenizer is not public or not
# bundled); the provider's own count_tokens endpoint is exact when a caller can afford the round trip.
DEFAULT_MARGINS = MappingProxyType({"openai": 1.0, "anthropic": 1.2, "gemini": 1.15, "bedrock": 1.25})
# An image of unknown size: OpenAI high detail for ~1024 px (4 tiles: 85 + 4 * 170), low detail 85;
# Anthropic ~1024 * 1024 / 750 capped at ~1,600; Gemini 258 per image.
IMAGE_TOKENS = MappingProxyType({"openai": 765, "anthropic": 1600, "gemini": 258, "bedrock": 1600})
LOW_DETAIL_TOKENS = 85
PER_MESSAGE = 3  # OpenAI chat format: <|start|>role ... <|end|>
REPLY_PRIMING = 3  # <|start|>assistant<|message|>
PER_TOOL = 8
CHARS_PER_TOKEN = 4  # the rough rule where no tokenizer or provider count is at hand
SHORT_TEXT = 16  # characters: a streamed delta this short is remembered with its count ...
SHORT_TEXTS_KEPT = 8192  # ... up to this many per encoding (then new ones are counted, not kept)


def estimate_tokens(chars: int) -> int:
    """Tokens in `chars` characters of text by the ~4-characters-a-token rule (rounded up)."""
    return -(-chars // CHARS_PER_TOKEN)


def estimate_text_tokens(texts: Iterable[str]) -> int:
    """Tokens of several texts by the same rule, at least one each: a call is never estimated as free."""
    return sum(max(1, estimate_tokens(len(t))) for t in texts)


class TokenEstimator:
    """Counts a chat request's prompt tokens for a given model. Encodings load once per estimator."""

    def __init__(self, margins: Mapping[str, float] | None = None) -> None:
        self._margins = {**DEFAULT_MARGINS, **(margins or {})}
        self._encodings: dict[str, bpe_openai.Encoding] = {}
        self._by_model: dict[tuple[str, str], bpe_openai.Encoding] = {}
        self._short: dict[str, dict[str, int]] = {}  # per encoding: the counts of short texts (bounded)
        self._counters: dict[tuple[str, str], Callable[[str], int]] = {}  # per model: built once (~3 µs each)

    @staticmethod
    def encoding_name(kind: str, upstream: str) -> str:
        """o200k_base, except OpenAI models that bpe-openai maps to another encoding (cl100k for gpt-4 / 3.5)."""
        if kind != "openai":
            return "o200k_base"
        try:
            return bpe_openai.encoding_name_for_model(upstream)
        except KeyError:
            return "o200k_base"  # current OpenAI models (o-series, gpt-4.1, gpt-5) use o200k

    def _encoding(self, kind: str, upstream: str) -> bpe_openai.Encoding:
        cached = self._by_model.get((kind, upstream))
        if cached is not None:
            return cached
        name = self.encoding_name(kind, upstream)
        if name not in self._encodings:
            self._encodings[name] = bpe_openai.get_encoding(name)
        self._by_model[(kind, upstream)] = self._encodings[name]
        return self._encodings[name]

    def count_text(self, text: str, kind: str = "openai", upstream: str = "gpt-4o") -> int:
        return len(self._encoding(kind, upstream).encode_ordinary(text)) if text else 0

    def counter(self, kind: str, upstream: str) -> Callable[[str], int]:
        """`count_text` for one model, its encoding resolved once (a stream counts every delta with it). Short
        texts are remembered per encoding: most streamed deltas are one common token, seen again and again."""
        known_counter = self._counters.get((kind, upstream))
        if known_counter is None:
            known_counter = self._counters[(kind, upstream)] = self._new_counter(kind, upstream)
        return known_counter

    def _new_counter(self, kind: str, upstream: str) -> Callable[[str], int]:
        encoding = self._encoding(kind, upstream)
        encode, known = encoding.encode_ordinary, self._short.setdefault(encoding.name, {})

        def count(text: str) -> int:
            n = known.get(text)
            if n is None:
                n = len(encode(text))
                if len(text) <= SHORT_TEXT and len(known) < SHORT_TEXTS_KEPT:
                    known[text] = n
            return n

        return count

    def prompt_tokens(self, request: ChatRequest, entry: ModelEntry, kind: str) -> int:
        """Messages (text, tool calls, images), tool schemas and a JSON schema, in the chat format's framing;
        for non-OpenAI providers times their margin, rounded up."""
        enc = self._encoding(kind, entry.upstream)
        tokens, images = REPLY_PRIMING, 0
        for message in request.messages:
            tokens += PER_MESSAGE + 1  # framing and role
            parts = message.content if isinstance(message.content, list) else ()
            text = message.text()
            if text:
                tokens += len(enc.encode_ordinary(text))
            for part in parts:
                if isinstance(part, ImagePart):
                    images += LOW_DETAIL_TOKENS if part.detail == "low" else IMAGE_TOKENS.get(kind, 1600)
            for call in message.tool_calls:
                tokens += PER_MESSAGE + len(enc.encode_ordinary(call.name)) + len(enc.encode_ordinary(call.arguments))
            if message.name:
                tokens += 1
        for tool in request.tools:
            spec = json.dumps({"name": tool.name, "description": tool.description, "parameters": tool.parameters})
            tokens += PER_TOOL + len(enc.encode_ordinary(spec))
        if request.response_format is not None and request.response_format.json_schema is not None:
            tokens += len(enc.encode_ordinary(json.dumps(request.response_format.json_schema)))
        return self._with_margin(tokens, kind) + images

    def input_tokens(self, texts: Iterable[str], entry: ModelEntry, kind: str) -> int:
        """Embedding inputs: their BPE count, times the provider's margin."""
        enc = self._encoding(kind, entry.upstream)
        return self._with_margin(sum(len(enc.encode_ordinary(t)) for t in texts), kind)

    def _with_margin(self, tokens: int, kind: str) -> int:
        margin = self._margins.get(kind, max(self._margins.values()))
        return math.ceil(tokens * margin - 1e-9)


def token_margins(config: GatewayConfig) -> dict[str, float]:
    """The configured margins by provider kind (the largest, when two providers of one kind differ)."""
    margins: dict[str, float] = {}
    for p in config.providers.values():
        if p.token_margin is not None:
            margins[p.kind] = max(p.token_margin, margins.get(p.kind, 0.0))
    return margins
