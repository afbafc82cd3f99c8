"""The emulated Claude: prompt accounting (images, tools, prompt caching), validation and content generation."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.emulators.anthropic.wire import AnthropicCall, context_length_error, invalid
from gateway.emulators.call import new_id
from gateway.emulators.faults import Behaviour
from gateway.emulators.text import (
    IMAGE_TOKENS,
    answer_text,
    count_json_tokens,
    count_tokens,
    json_answer,
    split_tokens,
    tool_arguments,
    tool_result_answer,
)

MIN_THINKING_BUDGET = 1024
_THINK_FILLER = ("so", "then", "check", "verify", "consider", "therefore", "next", "recall")


@dataclass
class Breakpoint:
    """A `cache_control` marker: the prompt prefix up to and including the marked block."""

    tokens: int
    key: str
    ttl: str


@dataclass
class Prompt:
    tokens: int = 0  # the whole prompt: tools + system + messages
    user_text: str = ""
    tool_results: list[str] | None = None  # set when the last user turn carries tool_result blocks
    breakpoints: list[Breakpoint] = field(default_factory=list)
    boundaries: list[Breakpoint] = field(default_factory=list)  # every block end: cache-read lookback points


@dataclass
class Block:
    """One output content block: `thinking`, `text` or `tool_use`."""

    kind: str
    pieces: list[str]
    tool_id: str = ""
    name: str = ""
    signature: str = ""

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def tokens(self) -> int:
        return len(self.pieces) + (1 if self.kind == "tool_use" else 0)  # a tool name counts one token

    def wire(self) -> dict[str, Any]:
        if self.kind == "thinking":
            return {"type": "thinking", "thinking": self.text, "signature": self.signature}
        if self.kind == "tool_use":
            return {"type": "tool_use", "id": self.tool_id, "name": self.name, "input": json.loads(self.text)}
        return {"type": "text", "text": self.text}


@dataclass
class Output:
    blocks: list[Block]
    stop_reason: str
    stop_sequence: str | None
    input_tokens: int  # excludes cache reads and writes (Anthropic's convention)
    cache_read: int
    cache_write: int
    cache_ttl: str

    @property
    def output_tokens(self) -> int:
        return sum(b.tokens for b in self.blocks)

    @property
    def thinking_tokens(self) -> int:
        return sum(b.tokens for b in self.blocks if b.kind == "thinking")

    @property
    def total_input(self) -> int:
        return self.input_tokens + self.cache_read + self.cache_write


# ---------------------------------------------------------------- prompt


def _int(body: Mapping[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid(f"{name}: Input should be a valid integer")
    if value < minimum:
        raise invalid(f"{name}: Input should be greater than or equal to {minimum}")
    return value


def _image_tokens(block: Mapping[str, Any], where: str) -> int:
    source = s if isinstance(s := block.get("source"), Mapping) else {}
    kind = source.get("type")
    if kind == "base64" and isinstance(source.get("data"), str) and isinstance(source.get("media_type"), str):
        return IMAGE_TOKENS
    if kind == "url" and isinstance(source.get("url"), str):
        return IMAGE_TOKENS
    if kind == "file" and isinstance(source.get("file_id"), str):
        return IMAGE_TOKENS
    raise invalid(f"{where}.source: expected a base64 (media_type, data), url or file image source")


def _result_text(content: Any, where: str) -> tuple[int, str]:
    """Tokens and text of a tool_result's content: a string or a list of text / image blocks."""
    if isinstance(content, str):
        return count_tokens(content), content
    tokens, texts = 0, []
    for i, part in enumerate(content if isinstance(content, list) else []):
        if isinstance(part, Mapping) and part.get("type") == "image":
            tokens += _image_tokens(part, f"{where}.content.{i}")
        elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
            texts.append(part["text"])
    text = " ".join(texts)
    return tokens + count_tokens(text), text


def _block_tokens(block: Mapping[str, Any], where: str) -> int:
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise invalid(f"{where}.text: Field required")
        return count_tokens(block["text"])
    if kind == "image":
        return _image_tokens(block, where)
    if kind == "document":
        source = s if isinstance(s := block.get("source"), Mapping) else {}
        return count_tokens(source.get("data")) if source.get("type") == "text" else IMAGE_TOKENS
    if kind == "tool_use":
        return count_tokens(str(block.get("name", ""))) + count_json_tokens(block.get("input") or {})
    if kind == "tool_result":
        return _result_text(block.get("content"), where)[0]
    return 0  # thinking / redacted_thinking of earlier turns are stripped from the context


class _PrefixHasher:
    """Running hash of the prompt in cache order (tools, system, messages) to key `cache_control` prefixes."""

    def __init__(self, model: str, prompt: Prompt) -> None:
        self.hash = hashlib.sha256(f"anthropic\x00{model}".encode())
        self.prompt = prompt

    def add(self, item: Any, tokens: int) -> None:
        self.prompt.tokens += tokens
        item = {k: v for k, v in item.items() if k != "cache_control"} if isinstance(item, Mapping) else item
        self.hash.update(json.dumps(item, sort_keys=True).encode() + b"\x00")
        self.prompt.boundaries.append(Breakpoint(self.prompt.tokens, self.hash.hexdigest(), "5m"))

    def mark(self, marker: Any) -> None:
        """Put a `cache_control` breakpoint after the block just added."""
        if isinstance(marker, Mapping) and self.prompt.boundaries:
            end = self.prompt.boundaries[-1]
            self.prompt.breakpoints.append(Breakpoint(end.tokens, end.key, "1h" if marker.get("ttl") == "1h" else "5m"))


def parse_prompt(body: Mapping[str, Any], model: str) -> Prompt:
    """Count the prompt and find what the answer depends on; raises 400 for malformed messages."""
    prompt = Prompt()
    hasher = _PrefixHasher(model, prompt)
    for tool in parse_tools(body)[1]:
        hasher.add(tool, count_json_tokens(tool))
        hasher.mark(tool.get("cache_control"))
    system = body.get("system")
    if isinstance(system, str):
        hasher.add(system, count_tokens(system))
    elif isinstance(system, list):
        for i, block in enumerate(system):
            if not isinstance(block, Mapping) or block.get("type") != "text" or not isinstance(block.get("text"), str):
                raise invalid(f"system.{i}: expected a text block")
            hasher.add(block, count_tokens(block["text"]))
            hasher.mark(block.get("cache_control"))
    elif system is not None:
        raise invalid("system: Input should be a valid string or a list of text blocks")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: at least one message is required")
    for m, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise invalid(f"messages.{m}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise invalid(
                f'messages.{m}.role: Unexpected role "{role}". The Messages API accepts a top-level `system` '
                'parameter, not "system" as an input message role.'
                if role == "system"
                else f"messages.{m}.role: Input should be 'user' or 'assistant'"
            )
        content = message.get("content")
        if isinstance(content, str):
            hasher.add({"role": role, "content": content}, count_tokens(content))
            texts, results = [content], None
        elif isinstance(content, list):
            texts, results = [], []
            for b, block in enumerate(content):
                where = f"messages.{m}.content.{b}"
                if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
                    raise invalid(f"{where}: Input should be a valid content block")
                hasher.add({"role": role, **block}, _block_tokens(block, where))
                hasher.mark(block.get("cache_control"))
                if block["type"] == "text":
                    texts.append(block["text"])
                elif block["type"] == "tool_result":
                    results.append(_result_text(block.get("content"), where)[1])
        else:
            raise invalid(f"messages.{m}.content: Input should be a valid string or list of content blocks")
        if role == "user":
            prompt.user_text = " ".join(texts)
            prompt.tool_results = results or None
    hasher.mark(body.get("cache_control"))  # top-level: a breakpoint on the last block
    if messages[-1].get("role") == "assistant" and prompt.tool_results is not None:
        prompt.tool_results = None  # an assistant turn after the results: answer the user again
    return prompt


def parse_tools(body: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], list[Any]]:
    """(custom tools as (name, input_schema), all tool definitions); 400 for a tool without a schema."""
    tools = body.get("tools")
    if tools is None:
        return [], []
    if not isinstance(tools, list):
        raise invalid("tools: Input should be a valid list")
    custom: list[tuple[str, Any]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise invalid(f"tools.{i}.name: Field required")
        if tool.get("type", "custom") != "custom":
            continue  # server tools (web search, ...) are accepted and never called
        if not isinstance(tool.get("input_schema"), Mapping):
            raise invalid(f"tools.{i}.custom.input_schema: Field required")
        custom.append((tool["name"], tool["input_schema"]))
    return custom, tools


# ---------------------------------------------------------------- generation


@dataclass
class Params:
    max_tokens: int
    stop_sequences: list[str]
    tools: list[tuple[str, Any]]
    tool_choice: Mapping[str, Any]
    thinking_budget: int | None  # None: no thinking
    schema: Mapping[str, Any] | None  # structured output (output_format / output_config.format)


def _unit_interval(body: Mapping[str, Any], name: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise invalid(f"{name}: Input should be a number between 0 and 1")


def _output_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    fmt = body.get("output_format")
    config = body.get("output_config")
    if fmt is None and isinstance(config, Mapping):
        fmt = config.get("format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        return fmt.get("schema") if isinstance(fmt.get("schema"), Mapping) else {}
    return None


def parse_params(body: Mapping[str, Any], model: str) -> Params:
    max_tokens = _int(body, "max_tokens", 1)
    if max_tokens is None:
        raise invalid("max_tokens: Field required")
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid("stop_sequences: Input should be a valid list of strings")
    _unit_interval(body, "temperature")
    _unit_interval(body, "top_p")
    _int(body, "top_k", 0)
    tools = parse_tools(body)[0]
    choice = body.get("tool_choice") or {"type": "auto"}
    if not isinstance(choice, Mapping) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise invalid("tool_choice: Input tag should be one of 'auto', 'any', 'tool', 'none'")
    if choice["type"] == "tool" and choice.get("name") not in [name for name, _ in tools]:
        raise invalid(f"tool_choice.tool.name: Tool '{choice.get('name')}' not found in 'tools'")
    if choice["type"] == "any" and not tools:
        raise invalid("tool_choice: 'any' requires 'tools' to be set")
    thinking = body.get("thinking")
    budget: int | None = None
    if isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
        budget = _int(thinking, "budget_tokens", MIN_THINKING_BUDGET)
        if budget is None:
            raise invalid("thinking.enabled.budget_tokens: Field required")
        if budget >= max_tokens:
            raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
    elif isinstance(thinking, Mapping) and thinking.get("type") == "adaptive":
        budget = max_tokens
    elif thinking is not None and not (isinstance(thinking, Mapping) and thinking.get("type") == "disabled"):
        raise invalid("thinking: Input tag should be one of 'enabled', 'disabled', 'adaptive'")
    elif thinking is None and "thinking" in model:
        budget = max_tokens
    return Params(max_tokens, stops, tools, choice, budget, _output_schema(body))


def cache_usage(call: AnthropicCall, prompt: Prompt) -> tuple[int, int, str]:
    """(cache read, cache write, ttl) for the prompt's `cache_control` breakpoints.

    The longest cached prefix ending at any block boundary up to the last breakpoint is read (the real
    lookback is 20 blocks); the rest up to the last breakpoint is written. Prefixes shorter than
    `settings.cache_min_tokens` are not cacheable (the real minimum is 1024-4096 tokens by model).
    """
    cache, minimum = call.ctx.prompt_cache, call.ctx.settings.cache_min_tokens
    points = [p for p in prompt.breakpoints if p.tokens >= minimum]
    if not points:
        return 0, 0, "5m"
    last = points[-1]
    read = max(
        (b.tokens for b in prompt.boundaries if minimum <= b.tokens <= last.tokens and b.key in cache), default=0
    )
    for p in points:
        cache.add(p.key)
    return read, last.tokens - read, last.ttl


def _choose_tools(params: Params, user_text: str, disable_parallel: bool) -> list[tuple[str, Any]]:
    """The OpenAI emulator's rules: a named tool; "parallel" in the message -> every tool; else the first."""
    choice = params.tool_choice
    if not params.tools or choice["type"] == "none":
        return []
    if choice["type"] == "tool":
        return [t for t in params.tools if t[0] == choice["name"]][:1]
    if not disable_parallel and "parallel" in user_text.lower():
        return list(params.tools)
    return params.tools[:1]


def thinking_text(model: str, user_text: str, n_tokens: int) -> str:
    """Deterministic thinking: `n_tokens` words, a pure function of (model, message, n)."""
    words = ["Let", "me", "think", "about:", *user_text.split()[:8]]
    digest = hashlib.shake_256(f"{model}\x00think\x00{user_text}".encode()).digest(max(0, n_tokens))
    words += [_THINK_FILLER[b % len(_THINK_FILLER)] for b in digest]
    return " ".join(words[:n_tokens])


def _stop_at(text: str, stops: list[str]) -> tuple[str, str | None]:
    """Cut `text` before the earliest stop sequence; returns (text, the stop sequence that matched)."""
    hits = [(i, s) for s in stops if s and (i := text.find(s)) >= 0]
    if not hits:
        return text, None
    cut, stop = min(hits, key=lambda h: h[0])
    return text[:cut].rstrip(), stop


def generate(call: AnthropicCall, prompt: Prompt, params: Params) -> Output:
    """Run the emulated model; raises the context-length error when the prompt is over the window."""
    if prompt.tokens > call.ctx.settings.context_window:
        raise context_length_error(call.ctx, prompt.tokens)
    read, write, ttl = cache_usage(call, prompt)
    blocks: list[Block] = []
    budget = params.max_tokens
    if params.thinking_budget is not None:
        n_think = min(call.ctx.settings.reasoning_tokens, params.thinking_budget, budget)
        if n_think > 0:
            thought = thinking_text(call.model, prompt.user_text, n_think)
            signature = base64.b64encode(hashlib.sha256(f"{call.model}\x00{thought}".encode()).digest() * 2).decode()
            blocks.append(Block("thinking", split_tokens(thought), signature=signature))
            budget -= n_think
    disable_parallel = bool(params.tool_choice.get("disable_parallel_tool_use"))
    tools = _choose_tools(params, prompt.user_text, disable_parallel) if prompt.tool_results is None else []
    usage = (prompt.tokens - read - write, read, write, ttl)
    if tools:
        for name, schema in tools:
            args = tool_arguments(schema)
            blocks.append(Block("tool_use", split_tokens(args), tool_id=new_id("toolu_"), name=name))
        return Output(blocks, "tool_use", None, *usage)
    n = call.timing.answer_tokens
    if params.schema is not None:
        text = json_answer(call.model, prompt.user_text, params.schema)
    elif prompt.tool_results is not None:
        text = tool_result_answer(call.model, prompt.tool_results, n)
    else:
        text = answer_text(call.model, prompt.user_text, n)
    text, stop_sequence = _stop_at(text, params.stop_sequences)
    pieces = split_tokens(text)
    stop_reason = "stop_sequence" if stop_sequence is not None else "end_turn"
    if len(pieces) > budget:
        pieces, stop_reason, stop_sequence = pieces[:budget], "max_tokens", None
    if call.behaviour is Behaviour.CONTENT_FILTER:
        pieces, stop_reason, stop_sequence = pieces[: max(1, len(pieces) // 2)], "refusal", None
    if pieces or not blocks:
        blocks.append(Block("text", pieces))
    return Output(blocks, stop_reason, stop_sequence, *usage)
