"""What the pipeline does about budgets: reserve a call's estimated cost on every account in its scope before the
call, and settle the actual cost after it (answered, failed with billed usage, or cut off)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from gateway.budgets.gate import BudgetGate, Reservation, to_micros
from gateway.budgets.policy import BudgetPolicy, accounts_for
from gateway.config import ModelEntry
from gateway.pricing import Pricer
from gateway.schema import ChatRequest, Usage
from gateway.tokens import TokenEstimator

DEFAULT_MAX_OUTPUT = 4096  # reserved when neither the request nor the catalog bounds the output


@dataclass(frozen=True, slots=True)
class Hold:
    reservation: Reservation
    input_tokens: int  # the estimate, charged for the prompt when a cut-off call reports no usage


class Spending:
    def __init__(self, policy: BudgetPolicy, gate: BudgetGate, pricer: Pricer, tokens: TokenEstimator,
                 kind_of: Callable[[str], str]) -> None:  # fmt: skip
        self.policy, self.gate = policy, gate
        self._pricer, self._tokens, self._kind_of = pricer, tokens, kind_of

    def price(self, entry: ModelEntry, usage: Usage) -> Decimal:
        cost = self._pricer.cost(self._kind_of(entry.provider), entry.price_as or entry.upstream, usage)
        assert cost is not None  # unpriced candidates never get this far (Pipeline._priced)
        return cost

    async def reserve(self, request: ChatRequest, entries: list[ModelEntry]) -> Hold | None:
        """The worst case over the plan's candidates: the prompt estimate (with each provider's margin) plus the
        whole output allowance. None when no budget applies to this call."""
        accounts = accounts_for(self.policy, request.metadata)
        if not accounts:
            return None
        worst_cost, worst_tokens, prompt = Decimal(0), 0, 0
        for entry in entries:
            inp = self._tokens.prompt_tokens(request, entry, self._kind_of(entry.provider))
            out = request.max_tokens or entry.max_output_tokens or DEFAULT_MAX_OUTPUT
            worst_cost = max(worst_cost, self.price(entry, Usage(input_tokens=inp, output_tokens=out)))
            worst_tokens, prompt = max(worst_tokens, inp + out), max(prompt, inp)
        reservation = await self.gate.reserve(accounts, to_micros(worst_cost), worst_tokens)
        return Hold(reservation, prompt)

    def settle(self, hold: Hold | None, entry: ModelEntry | None, usage: Usage | None,
               cost: Decimal | None = None) -> None:  # fmt: skip
        """Book what the provider bills for the call: `cost` if known, else `usage` priced for `entry`; nothing
        when the call failed before anything was billed."""
        if hold is None:
            return
        if cost is None and usage is not None and entry is not None and (usage.input_tokens or usage.output_tokens):
            cost = self.price(entry, usage)
        tokens = usage.total_tokens if usage is not None else 0
        self.gate.settle(hold.reservation, to_micros(cost) if cost is not None else 0, tokens)
