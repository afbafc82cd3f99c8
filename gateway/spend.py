"""What one call has cost so far, with one owner: the provider's final count, or a running count of a stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from gateway.budgets.spending import Hold, Spending
from gateway.config import ModelEntry
from gateway.limits.gate import LimitGate, Ticket
from gateway.providers import Target
from gateway.schema import Usage
from gateway.schema.limits import RateStatus


@dataclass(frozen=True, slots=True)
class Final:
    """The provider's own count at the end of a call, and its price (None: no price known)."""

    usage: Usage
    cost: Decimal | None


@dataclass(slots=True)
class Running:
    """A stream that has not finished: the output counted so far, and the provider's running count if it sent
    one. What it bills is the larger of the two, never less output than was relayed. Updated in place by its
    one owner, the call's CallSpend (a stream updates it at every delta)."""

    output_tokens: int = 0
    reported: Usage | None = None

    def billed(self) -> Usage | None:
        if self.reported is None:
            return Usage(output_tokens=self.output_tokens) if self.output_tokens else None
        if self.reported.output_tokens >= self.output_tokens:
            return self.reported
        return self.reported.model_copy(update={"output_tokens": self.output_tokens})


@dataclass
class CallSpend:
    """One call's spend, for settling its budget reservation however it ends.

    The call is on one model at a time (`entry`); its count is `Final` once the provider finished, else
    `Running`. A stream that broke and was continued elsewhere keeps the broken part's cost in `prior`.
    Attempts billed without an answer (failed, timed out, a lost hedge) are listed in `abandoned`.
    """

    hold: Hold | None = None  # with budgets: the reservation the call is metered against
    decision: str | None = None  # the budget decision, for the start event and `x-gateway-budget`
    entry: ModelEntry | None = None
    count: Final | Running = field(default_factory=Running)
    prior: Decimal | None = None
    cut: bool = False  # the stream was ended by a budget
    abandoned: list[tuple[Target, Usage | None]] = field(default_factory=list)
    ticket: Ticket | None = None  # with rate limits: what the call took from its buckets
    limits: LimitGate | None = None

    @property
    def rate(self) -> RateStatus | None:
        return self.ticket.status if self.ticket is not None else None

    @property
    def metered(self) -> bool:
        return self.hold is not None

    def abandon(self, target: Target, usage: Usage | None) -> None:
        self.abandoned.append((target, usage))

    def on(self, entry: ModelEntry) -> None:
        """A (new) stream or answer on `entry` starts: its own count starts at zero."""
        self.entry, self.count = entry, Running()

    def counted(self, output_tokens: int) -> None:
        count = self.count
        if type(count) is Running:
            count.output_tokens = output_tokens
        ticket = self.ticket
        if ticket is not None and output_tokens > ticket.output_tokens:  # past its allowance: drawn as it goes
            self.limits.draw(ticket, output_tokens)  # type: ignore[union-attr]

    def reported(self, usage: Usage) -> None:
        """The provider's running count (e.g. Anthropic's prompt count at message start)."""
        if isinstance(self.count, Running):
            self.count.reported = usage

    def broke(self, usage: Usage | None) -> None:
        """The stream failed: what the provider reported with the failure, else what was counted."""
        if usage is not None and isinstance(self.count, Running):
            self.count.reported = usage

    def finished(self, usage: Usage, cost: Decimal | None) -> None:
        self.count = Final(usage, cost)

    def billed(self) -> Usage | None:
        return self.count.usage if isinstance(self.count, Final) else self.count.billed()

    def settle(self, spending: Spending | None) -> None:
        self._reconcile_limits()
        self._book(spending)

    def _reconcile_limits(self) -> None:
        """The call's rate-limit buckets learn what it used: billed usage (its own and its abandoned attempts')."""
        ticket, gate = self.ticket, self.limits
        if ticket is None or gate is None or ticket.done:
            return
        usage = self.billed()
        out = usage.output_tokens if usage is not None else 0
        inp = (usage.input_tokens if usage is not None else 0) or (ticket.input_tokens if out else 0)
        for _, used in self.abandoned:  # billed without answering: their count, else the prompt estimate
            inp += used.input_tokens if used is not None else ticket.input_tokens
            out += used.output_tokens if used is not None else 0
        gate.reconcile(ticket, inp, out)

    def _book(self, spending: Spending | None) -> None:
        """Book the call: the final cost, else its billed usage priced (the prompt estimate added when only
        output was counted), else nothing (it failed before anything was billed); plus abandoned attempts."""
        hold = self.hold
        if hold is None or spending is None:
            return
        usage, cost = self.billed(), self.count.cost if isinstance(self.count, Final) else None
        if cost is None and usage is not None and usage.output_tokens and not usage.input_tokens:
            usage = usage + Usage(input_tokens=hold.input_tokens)
        if cost is None and self.prior is not None:  # a continuation that broke too: both parts were billed
            billed = usage is not None and self.entry is not None and usage.total_tokens > 0
            cost = self.prior + (spending.price(self.entry, usage) if billed else Decimal(0))  # type: ignore[arg-type]
        extra = []  # failed, timed-out and lost-hedge attempts: their reported usage, else the prompt estimate
        for target, used in self.abandoned:
            used = used or Usage(input_tokens=hold.prompt.get(target.name, hold.input_tokens))
            extra.append((spending.price(target.entry, used), used.total_tokens))
        spending.settle(hold, self.entry, usage, cost, extra)
