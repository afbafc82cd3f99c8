"""Mid-stream enforcement: a budgeted stream's output counted against its reservation, which is extended from its
budgets when reached; when they have nothing left, the stream is cut (or, per budget, allowed to overrun)."""

from __future__ import annotations

from decimal import Decimal

from gateway.budgets.gate import to_picos
from gateway.budgets.spending import Hold, Spending
from gateway.config import ModelEntry


class StreamMeter:
    def __init__(self, spending: Spending, hold: Hold, entry: ModelEntry, name: str, prior: Decimal | None) -> None:
        """`prior`: what a broken stream this one continues already cost (it is inside the same reservation)."""
        self._spending, self._hold, self._entry = spending, hold, entry
        self._prior = to_picos(prior) if prior is not None else 0
        self.input_tokens = hold.prompt.get(name, hold.input_tokens)
        self.limit: int | None = self._compute()
        self.extensions = 0

    def _compute(self) -> int:
        return self._spending.output_limit(self._hold, self._entry, self.input_tokens, self._prior)

    def reported_input(self, tokens: int) -> None:
        """The provider counted the prompt (Anthropic's message start): the limit follows its count."""
        if tokens and tokens != self.input_tokens:
            self.input_tokens = tokens
            self.limit = self._compute() if self.limit is not None else None

    async def exhausted(self, output_tokens: int) -> bool:
        """`output_tokens` went past the limit: True when the stream must end here (budgets `cut`); else the
        reservation was extended, or the overrun is allowed (the limit is lifted)."""
        while self.limit is not None and output_tokens > self.limit:
            if not await self._spending.extend(self._hold, self._entry):
                if self._hold.cut:
                    return True
                self.limit = None  # allow: the call runs on to its max_tokens; the overrun is booked
                return False
            self.extensions += 1
            self.limit = self._compute()
        return False
