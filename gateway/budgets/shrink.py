"""Auto-shrink: make a chat request fit a budget by truncating long tool results, dropping the oldest turns and
lowering max_tokens — never touching the system prompt or the last user message (and what follows it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.schema import ChatRequest, Message, TextPart

TOOL_KEEP_CHARS = 2000  # a truncated tool result keeps its head (where most tools put the answer)
MARKER = "\n[... {} characters cut by the gateway to fit a budget]"


@dataclass
class Shrunk:
    """What a shrink removed, for the decision event."""

    request: ChatRequest
    dropped_messages: int = 0
    truncated_tool_results: int = 0
    cut_chars: int = 0
    max_tokens: tuple[int | None, int] | None = None  # (before, after)

    def summary(self) -> str:
        parts = []
        if self.truncated_tool_results:
            parts.append(f"truncated {self.truncated_tool_results} tool results ({self.cut_chars} chars)")
        if self.dropped_messages:
            parts.append(f"dropped {self.dropped_messages} oldest messages")
        if self.max_tokens is not None:
            parts.append(f"max_tokens {self.max_tokens[0] or 'unset'} -> {self.max_tokens[1]}")
        return ", ".join(parts) or "nothing"


def _text(message: Message) -> str | None:
    if isinstance(message.content, str):
        return message.content
    if isinstance(message.content, list) and all(isinstance(p, TextPart) for p in message.content):
        return "".join(p.text for p in message.content)  # type: ignore[union-attr]
    return None


def _protected_from(messages: tuple[Message, ...]) -> int:
    """Index of the last user message: it and everything after it are kept."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            return i
    return len(messages)


def _truncate_tool_results(s: Shrunk, fits: Callable[[ChatRequest], bool]) -> bool:
    """Tool results before the last user message keep their head; those after it (what the model is answering
    now) are kept whole."""
    messages = list(s.request.messages)
    for i, m in enumerate(messages[: _protected_from(s.request.messages)]):
        text = _text(m)
        if m.role != "tool" or text is None or len(text) <= TOOL_KEEP_CHARS:
            continue
        cut = len(text) - TOOL_KEEP_CHARS
        messages[i] = m.model_copy(update={"content": text[:TOOL_KEEP_CHARS] + MARKER.format(cut)})
        s.truncated_tool_results += 1
        s.cut_chars += cut
        s.request = s.request.model_copy(update={"messages": tuple(messages)})
        if fits(s.request):
            return True
    return False


def _drop_oldest_turns(s: Shrunk, fits: Callable[[ChatRequest], bool]) -> bool:
    """Drop whole exchanges from the oldest on: a user message with the answers and tool results after it, so
    no tool result loses its call and the history still starts with a user message."""
    while True:
        messages = s.request.messages
        keep_until = _protected_from(messages)
        droppable = [i for i in range(keep_until) if messages[i].role != "system"]
        if not droppable:
            return False
        first = droppable[0]
        end = first + 1
        while end < keep_until and messages[end].role not in ("user", "system"):
            end += 1  # the assistant's answers and tool results that belong to this exchange
        s.dropped_messages += end - first
        s.request = s.request.model_copy(update={"messages": messages[:first] + messages[end:]})
        if fits(s.request):
            return True


def _lower_max_tokens(s: Shrunk, fits: Callable[[ChatRequest], bool], allowance: int, floor: int) -> bool:
    """The largest max_tokens in [floor, allowance) that fits (binary search: cost grows with max_tokens)."""
    low, high = floor, allowance - 1
    if high < low or not fits(s.request.model_copy(update={"max_tokens": low})):
        return False
    while low < high:
        mid = (low + high + 1) // 2
        if fits(s.request.model_copy(update={"max_tokens": mid})):
            low = mid
        else:
            high = mid - 1
    s.max_tokens = (s.request.max_tokens, low)
    s.request = s.request.model_copy(update={"max_tokens": low})
    return True


def shrink(request: ChatRequest, fits: Callable[[ChatRequest], bool], allowance: int, floor: int) -> Shrunk | None:
    """The least-shrunk request that `fits`, or None. `allowance` is the output the request would reserve as it
    is; max_tokens is lowered no further than `floor`."""
    s = Shrunk(request)
    if fits(request):
        return s
    for step in (_truncate_tool_results, _drop_oldest_turns):
        if step(s, fits):
            return s
    return s if _lower_max_tokens(s, fits, allowance, min(floor, allowance)) else None
