"""Continuing a broken text stream elsewhere: the text already sent becomes an assistant prefill."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config import ModelEntry
from gateway.routing.planner import Candidate, RoutePlan
from gateway.schema import ChatRequest, Message


def continuation(request: ChatRequest, plan: RoutePlan, broke: str, text: str, output_tokens: int,
                 catalog: Mapping[str, ModelEntry]) -> tuple[ChatRequest, RoutePlan] | None:  # fmt: skip
    """The request that continues a stream of `request` that broke on `broke` after sending `text` (counted as
    `output_tokens`), and the prefill-capable candidates to send it to: those after the broken one first, the
    broken one last. None when there is nothing to continue or nowhere to continue it."""
    left = request.max_tokens - output_tokens if request.max_tokens is not None else None
    if not text or (left is not None and left < 1):
        return None
    names = [c.model for c in plan.candidates if catalog[c.model].capabilities.prefill]
    if broke in names:
        i = names.index(broke)
        names = names[i + 1 :] + names[: i + 1]
    if not names:
        return None
    messages = (*request.messages, Message(role="assistant", content=text))
    continued = request.model_copy(update={"messages": messages, "max_tokens": left, "fallbacks": ()})
    candidates = tuple(Candidate(m, f"continues the broken stream of {broke}") for m in names)
    return continued, RoutePlan(plan.task_class, candidates)


def resumable(plan: RoutePlan, catalog: Mapping[str, ModelEntry], continue_on_break: bool) -> bool:
    """Whether a break of this plan's stream could be continued (so the relayed text must be kept)."""
    return continue_on_break and any(catalog[c.model].capabilities.prefill for c in plan.candidates)
