"""The emulated model behind chat and responses: prompt accounting, caching, tool choice, truncation."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.emulators.call import Call
from gateway.emulators.faults import Behaviour, FaultKind
from gateway.emulators.openai.wire import OpenAIError, context_length_error, new_id
from gateway.emulators.text import (
    IMAGE_TOKENS,
    answer_text,
    count_tokens,
    json_answer,
    split_tokens,
    tool_arguments,
    tool_result_answer,
    truncate_at_stop,
)

REASONING_PREFIXES = ("o1", "o3", "o4")
CACHE_BLOCK = 128
IMAGE_PART_TYPES = ("image_url", "input_image", "image")


@dataclass
class Prompt:
    """What the emulated model needs from a request, whatever the API flavour."""

    tokens: int = 0
    system_text: str = ""
    user_text: str = ""
    tool_results: list[str] | None = None  # set when the conversation ends with tool results


@dataclass
class Tool:
    name: str
    parameters: Mapping[str, Any] | None


@dataclass
class ToolCall:
    call_id: str
    name: str
    arguments: str
    pieces: list[str]

    @property
    def tokens(self) -> int:
        return len(self.pieces) + 1  # the name counts one token


@dataclass
class Request:
    """Generation parameters normalised from either API."""

    tools: list[Tool] = field(default_factory=list)
    tools_tokens: int = 0  # words of the request's JSON tool definitions
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    json_mode: bool = False
    json_schema: Mapping[str, Any] | None = None


@dataclass
class Output:
    """A generated answer plus its usage numbers."""

    pieces: list[str]
    tool_calls: list[ToolCall]
    finish: str  # stop | length | tool_calls | content_filter
    prompt_tokens: int
    cached_tokens: int
    reasoning_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        return self.reasoning_tokens + len(self.pieces) + sum(c.tokens for c in self.tool_calls)


def is_reasoning_model(model: str) -> bool:
    return model.startswith(REASONING_PREFIXES)


def _cached_tokens(call: Call, prompt: Prompt) -> int:
    n = len(prompt.system_text.split())
    if n < max(call.ctx.settings.cache_min_tokens, CACHE_BLOCK):
        return 0
    key = hashlib.sha256(prompt.system_text.encode()).hexdigest()
    if key in call.ctx.prompt_cache:
        return (n // CACHE_BLOCK) * CACHE_BLOCK
    call.ctx.prompt_cache.add(key)
    return 0


def _choose_tools(req: Request, user_text: str) -> list[Tool]:
    choice = req.tool_choice
    if not req.tools or choice == "none":
        return []
    if isinstance(choice, Mapping):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else choice.get("name")
        chosen = [t for t in req.tools if t.name == name]
        if not chosen:
            raise OpenAIError(FaultKind.INVALID_REQUEST, f"Tool choice '{name}' not found in 'tools'.", "tool_choice")
        return chosen[:1]
    if req.parallel_tool_calls and "parallel" in user_text.lower():
        return list(req.tools)
    return req.tools[:1]


def generate(call: Call, prompt: Prompt, req: Request, param: str) -> Output:
    """Run the emulated model; raises the context-length error when the prompt is over the window."""
    prompt.tokens += req.tools_tokens
    if prompt.tokens > call.ctx.settings.context_window:
        raise context_length_error(call.ctx, prompt.tokens, param)
    cached = _cached_tokens(call, prompt)
    reasoning = call.ctx.settings.reasoning_tokens if is_reasoning_model(call.model) else 0
    n = call.timing.answer_tokens
    tools = _choose_tools(req, prompt.user_text) if prompt.tool_results is None else []
    if tools:
        calls: list[ToolCall] = []
        for tool in tools:
            args = tool_arguments(tool.parameters)
            calls.append(ToolCall(new_id("call_"), tool.name, args, split_tokens(args)))
        return Output([], calls, "tool_calls", prompt.tokens, cached, reasoning)
    if req.json_mode or req.json_schema is not None:
        text = json_answer(call.model, prompt.user_text, req.json_schema)
    elif prompt.tool_results is not None:
        text = tool_result_answer(call.model, prompt.tool_results, n)
    else:
        text = answer_text(call.model, prompt.user_text, n)
    text, _ = truncate_at_stop(text, req.stop)
    pieces, finish = split_tokens(text), "stop"
    if req.max_tokens is not None:
        reasoning = min(reasoning, req.max_tokens)
        budget = max(0, req.max_tokens - reasoning)
        if len(pieces) > budget:
            pieces, finish = pieces[:budget], "length"
    if call.behaviour is Behaviour.CONTENT_FILTER:
        pieces, finish = pieces[: max(1, len(pieces) // 2)], "content_filter"
    return Output(pieces, [], finish, prompt.tokens, cached, reasoning)


def stop_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence):
        return [s for s in value if isinstance(s, str)]
    return []


def int_or_none(value: Any, param: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise OpenAIError(FaultKind.INVALID_REQUEST, f"Invalid '{param}': expected an integer >= 1.", param)
    return value


def content_tokens(content: Any) -> tuple[int, str]:
    """Tokens and plain text of a message content: a string or a list of text/image parts."""
    if isinstance(content, str):
        return count_tokens(content), content
    if not isinstance(content, list):
        return 0, ""
    texts: list[str] = []
    tokens = 0
    for part in content:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind in IMAGE_PART_TYPES:
            tokens += IMAGE_TOKENS
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
    text = " ".join(texts)
    return tokens + count_tokens(text), text
