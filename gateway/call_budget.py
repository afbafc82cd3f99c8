"""The caller's budget for one call (`gateway.budget`): what fits before the call, and where a stream must end."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from gateway.config import ModelEntry
from gateway.schema import CallBudget, ChatRequest, EmbeddingsRequest, ErrorKind, GatewayError, Usage

DEFAULT_OUTPUT = 4096  # the output a call without max_tokens is assumed to allow, on a model with no maximum
Price = Callable[[ModelEntry, Usage], "Decimal | None"]
PromptTokens = Callable[[str, ModelEntry], int]


def _over(message: str) -> GatewayError:
    return GatewayError(ErrorKind.BUDGET_EXCEEDED, message, param="gateway.budget", code="call_budget_exceeded")


@dataclass(frozen=True, slots=True)
class CallLimits:
    """A call budget applied to one request: the prompt estimate per candidate, to bound its output."""

    budget: CallBudget
    price: Price
    prompt: Mapping[str, int]
    header: str

    def output_limit(self, name: str, entry: ModelEntry, input_tokens: int | None = None,
                     prior: Decimal | None = None) -> int:  # fmt: skip
        """The most output tokens `entry` may produce after `input_tokens` of prompt (default: the estimate) and
        `prior` already spent (a broken stream this one continues); -1 when even the prompt does not fit."""
        inp = self.prompt.get(name, 0) if input_tokens is None else input_tokens
        return _room(self.budget, self.price, entry, inp, prior or Decimal(0), 1 << 24)


def _room(budget: CallBudget, price: Price, entry: ModelEntry, prompt: int, prior: Decimal, most: int) -> int:
    """The largest output (≤ `most`) whose tokens and cost, with `prompt` and `prior`, stay within `budget`."""
    room = most if budget.max_tokens is None else min(most, budget.max_tokens - prompt)
    if budget.max_cost_usd is None or room < 0:
        return room

    def fits(out: int) -> bool:
        cost = price(entry, Usage(input_tokens=prompt, output_tokens=out))
        return cost is not None and prior + cost <= budget.max_cost_usd  # type: ignore[operator]

    if not fits(0):
        return -1
    lo, hi = 0, room  # fits(lo) holds; find the largest that fits (prices only grow with tokens)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def _describe(budget: CallBudget) -> str:
    parts = [f"max_cost_usd={budget.max_cost_usd}"] if budget.max_cost_usd is not None else []
    return "call: " + ", ".join(parts + ([f"max_tokens={budget.max_tokens}"] if budget.max_tokens else []))


def apply_call_budget(request: ChatRequest, entries: Mapping[str, ModelEntry], price: Price,
                      prompt_tokens: PromptTokens) -> tuple[ChatRequest, list[str], CallLimits]:  # fmt: skip
    """Before the call: the candidates (by name) whose prompt fits the budget with at least one output token, and
    the request with max_tokens bounded to what fits on all of them. A max_tokens the caller set above that is
    refused (402), or shrunk when the budget says `on_exceed: shrink`; an unset one is set to it."""
    budget = request.metadata.budget
    assert budget is not None
    prompt = {name: prompt_tokens(name, entry) for name, entry in entries.items()}
    rooms = {name: _room(budget, price, e, prompt[name], Decimal(0), _allowance(request, e))
             for name, e in entries.items()}  # fmt: skip
    kept = [name for name, room in rooms.items() if room >= 1]
    described = _describe(budget)
    if not kept:
        raise _over(f"the prompt alone does not fit this call's budget ({described}; ~{min(prompt.values())} "
                    "prompt tokens)")  # fmt: skip
    cap = min(rooms[n] for n in kept)
    action = "allow"
    if request.max_tokens is not None and request.max_tokens > cap:
        if budget.on_exceed == "refuse":
            raise _over(f"max_tokens {request.max_tokens} does not fit this call's budget ({described}): at most "
                        f"{cap} output tokens fit; lower max_tokens or send on_exceed=shrink")  # fmt: skip
        request, action = request.model_copy(update={"max_tokens": cap}), f"shrink max_tokens={cap}"
    elif request.max_tokens is None and any(_allowance(request, entries[n]) > cap for n in kept):
        request, action = request.model_copy(update={"max_tokens": cap}), f"cap max_tokens={cap}"
    header = f"{described}; {action}"
    return request, kept, CallLimits(budget, price, prompt, header)


def embeddings_fit(
    request: EmbeddingsRequest,
    entries: Mapping[str, ModelEntry],
    price: Price,
    input_tokens: Callable[[tuple[str, ...], ModelEntry], int],
) -> list[str]:
    """The embedding candidates (by name) whose inputs fit the call's budget; none is a 402."""
    budget = request.metadata.budget
    assert budget is not None
    kept = []
    for name, entry in entries.items():
        tokens = input_tokens(request.texts, entry)
        cost = price(entry, Usage(input_tokens=tokens))
        within_cost = budget.max_cost_usd is None or (cost is not None and cost <= budget.max_cost_usd)
        if within_cost and (budget.max_tokens is None or tokens <= budget.max_tokens):
            kept.append(name)
    if not kept:
        raise _over(f"the inputs do not fit this call's budget ({_describe(budget)})")
    return kept


def _allowance(request: ChatRequest, entry: ModelEntry) -> int:
    return request.max_tokens or entry.max_output_tokens or DEFAULT_OUTPUT
