"""One opened stream to the client: its output counted and metered against its budgets, its end made explicit."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from gateway.budgets.meter import StreamMeter
from gateway.budgets.spending import Spending
from gateway.call_budget import CallLimits
from gateway.control.replica import ReplicaControl
from gateway.providers import Target
from gateway.runner import Attempt
from gateway.schema import (
    ErrorEvent,
    ErrorKind,
    FinishEvent,
    GatewayError,
    StartEvent,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from gateway.schema.errors import BROKE_MID_STREAM
from gateway.spend import CallSpend

log = logging.getLogger("gateway.stream")
Opened = tuple[AsyncIterator[StreamEvent], list[StreamEvent]]
Cost = Callable[[Target, str, Usage], "Decimal | None"]
Counter = Callable[[Target], Callable[[str], int]]  # a model's token counter, resolved once per leg
# Breaks after which a stream may continue elsewhere (a refusal or a bad request would not get better).
CONTINUABLE = BROKE_MID_STREAM | {ErrorKind.TRUNCATED_STREAM}
_NO_LIMIT = 1 << 62  # a leg without output limits: its bound never passes this


@dataclass
class Progress:
    """What the client has been sent of one request's stream; `text` is kept only when it could be continued."""

    text: list[str] | None
    counted: int = 0  # output tokens counted from the relayed text (up to the last tally)
    reported: int = 0  # the provider's running output count (Anthropic's message_start says 1 before any text)
    deltas: int = 0
    pending: list[str] = field(default_factory=list)  # relayed text not yet counted (counted in one go, lazily)
    bound: int = 0  # an upper bound of the output tokens: the last tally + the pending text's UTF-8 bytes
    tools: bool = False
    broken: GatewayError | None = None

    @property
    def output_tokens(self) -> int:
        """The larger of the two counts: a running count is not added to the text already counted."""
        return max(self.counted, self.reported)


@dataclass(frozen=True, slots=True)
class Leg:
    """One stream of a request as it is relayed: the first, or a continuation of a broken one (`prior`: the
    broken part's usage and cost, added to this one's finish; `route` None: its start event is not sent again)."""

    run: Attempt[Opened]
    attempts: int
    route: str | None
    started: float
    deadline: float
    prior: tuple[Usage, Decimal | None] | None = None


async def _chain(head: Iterable[StreamEvent], rest: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
    for event in head:
        yield event
    async for event in rest:
        yield event


def _tool_text(event: ToolCallDelta, progress: Progress) -> str:
    """A tool call delta's text, as it is counted (a tool call also means the stream cannot be continued)."""
    progress.tools = True
    return (event.arguments or "") + (event.name or "")


class _Budgets:
    """The output limits of one leg: the scoped budgets' meter and the caller's own call budget."""

    def __init__(self, meter: StreamMeter | None, call_limit: int | None, prompt: int) -> None:
        self.meter, self.call_limit = meter, call_limit
        self.prompt = meter.input_tokens if meter is not None else prompt  # for a cut that has no count of it
        limits = [n for n in (call_limit, meter.limit if meter is not None else None) if n is not None]
        self.ceiling = min(limits) if limits else None  # below it no limit can be exceeded: nothing to ask

    def over(self, output_tokens: int) -> bool:
        """Past the lowest limit: only then is a limit asked (no coroutine per delta below it)."""
        return self.ceiling is not None and output_tokens > self.ceiling

    async def exhausted(self, output_tokens: int) -> bool:
        if self.call_limit is not None and output_tokens > self.call_limit:
            return True
        meter = self.meter
        return meter is not None and meter.limit is not None and output_tokens > meter.limit and (
            await meter.exhausted(output_tokens))  # fmt: skip


class StreamRelay:
    """Relays opened streams for one replica (holds no per-request state: that is in Progress and CallSpend)."""

    def __init__(self, control: ReplicaControl, spending: Spending | None, cost: Cost, counter: Counter,
                 usage_every: int) -> None:  # fmt: skip
        self._control, self._spending, self._cost, self._counter = control, spending, cost, counter
        self._usage_every = usage_every

    def _budgets(self, leg: Leg, spend: CallSpend, limits: CallLimits | None) -> _Budgets:
        target = leg.run.target
        prior = leg.prior[1] if leg.prior else None
        meter = None
        if spend.hold is not None and self._spending is not None:
            meter = StreamMeter(self._spending, spend.hold, target.entry, target.name, prior)
        if limits is None:
            return _Budgets(meter, None, 0)
        call = limits.output_limit(target.name, target.entry, None, prior)
        return _Budgets(meter, call, limits.prompt.get(target.name, 0))

    async def relay(self, leg: Leg, progress: Progress, spend: CallSpend,
                    limits: CallLimits | None) -> AsyncGenerator[StreamEvent, None]:  # fmt: skip
        """The leg's events to the client; a break it could continue is left in `progress.broken`."""
        (events, head), target = leg.run.result, leg.run.target
        spend.on(target.entry)
        budgets, count = self._budgets(leg, spend, limits), self._counter(target)
        ends = min(leg.run.t0 + leg.run.limits.total, leg.deadline)
        outcome: GatewayError | None = None
        finished = False
        ceiling = budgets.ceiling if budgets.ceiling is not None else _NO_LIMIT
        pending, kept = progress.pending, progress.text
        usage_every = self._usage_every
        try:
            async for event in _chain(head, events):
                if time.perf_counter() > ends:  # silence is bounded by the read timeout; this bounds trickling
                    self._tally(count, progress, spend)
                    raise GatewayError(ErrorKind.TRUNCATED_STREAM, "the stream exceeded its total time limit",
                                       provider=target.provider, model=target.name,
                                       usage=spend.billed())  # fmt: skip
                kind = type(event)
                if kind is TextDelta or kind is ToolCallDelta:  # inline: this runs for every delta
                    progress.deltas += 1
                    text = event.text if kind is TextDelta else _tool_text(event, progress)  # type: ignore[union-attr, arg-type]
                    if text:
                        pending.append(text)  # counted in one go, by the model's tokenizer, when needed
                        progress.bound += len(text) if text.isascii() else len(text.encode())  # token >= 1 byte
                        if kept is not None and kind is TextDelta:
                            kept.append(text)
                    if (
                        progress.bound > ceiling
                        and budgets.over(self._tally(count, progress, spend))
                        and await budgets.exhausted(progress.output_tokens)
                    ):  # not relayed, but billed
                        yield self._cut(leg, spend, budgets)
                        finished = True
                        break
                    yield event
                    if progress.deltas % usage_every == 0:
                        yield UsageEvent(usage=Usage(output_tokens=self._tally(count, progress, spend)))
                elif isinstance(event, FinishEvent):
                    finished = True
                    yield self._finish(leg, event, spend)
                elif isinstance(event, UsageEvent):  # the provider's own count so far (kept, not relayed)
                    self._reported(event.usage, progress, spend, budgets)
                elif isinstance(event, StartEvent):
                    if leg.route is not None:
                        yield event.model_copy(update={"attempt": leg.attempts, "route": leg.route,
                                                       "budget": spend.decision, "rate": spend.rate})  # fmt: skip
                else:
                    yield event
        except GatewayError as exc:
            outcome = exc
            self._tally(count, progress, spend)
            spend.broke(exc.usage)
            if progress.text is not None and progress.deltas and exc.kind in CONTINUABLE:
                progress.broken = exc  # the caller may continue it elsewhere
            else:
                yield ErrorEvent(error=exc.to_info(), usage=spend.billed())
        except Exception as exc:  # a bug or an unmapped failure must still end the stream visibly
            log.exception("stream on %s failed", target.name)
            yield ErrorEvent(error=GatewayError(ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}").to_info())
        finally:
            if not finished:  # a client that left or a break: what was relayed is billed
                self._tally(count, progress, spend)
            await events.aclose()  # type: ignore[attr-defined]
            run = leg.run
            latency = (time.perf_counter() - run.t0) * 1000 if finished else None  # a client that left says nothing
            self._control.record(target.provider, target.name, run.started_at, outcome, latency, run.first_ms)

    @staticmethod
    def _tally(count: Callable[[str], int], progress: Progress, spend: CallSpend) -> int:
        """Count the pending text; the stream's output tokens so far, also given to the call's spend."""
        if progress.pending:
            progress.counted += count("".join(progress.pending)) or 1
            progress.pending.clear()
        progress.bound = tokens = progress.output_tokens
        spend.counted(tokens)
        return tokens

    @staticmethod
    def _reported(usage: Usage, progress: Progress, spend: CallSpend, budgets: _Budgets) -> None:
        """The provider's running count: the larger output count wins; the prompt count moves the meter."""
        spend.reported(usage)
        progress.reported = max(progress.reported, usage.output_tokens)
        progress.bound = max(progress.bound, progress.reported)
        spend.counted(progress.output_tokens)
        if budgets.meter is not None:
            budgets.meter.reported_input(usage.input_tokens)

    def _with_prior(self, leg: Leg, target: Target, usage: Usage) -> tuple[Usage, Decimal | None]:
        cost = self._cost(target, target.upstream, usage)
        if leg.prior is None:
            return usage, cost
        usage = usage + leg.prior[0]
        return usage, (cost + leg.prior[1] if cost is not None and leg.prior[1] is not None else None)

    def _finish(self, leg: Leg, event: FinishEvent, spend: CallSpend) -> FinishEvent:
        usage, cost = self._with_prior(leg, leg.run.target, event.usage)
        spend.finished(usage, cost)
        latency = (time.perf_counter() - leg.started) * 1000
        return event.model_copy(update={"latency_ms": latency, "attempts": leg.attempts, "cost_usd": cost,
                                        "usage": usage})  # fmt: skip

    def _cut(self, leg: Leg, spend: CallSpend, budgets: _Budgets) -> FinishEvent:
        """The finish of a stream its budgets ended: budget_exceeded, with what was billed up to here."""
        target = leg.run.target
        spend.cut = True
        usage = spend.billed() or Usage()
        if not usage.input_tokens:
            usage = usage.model_copy(update={"input_tokens": budgets.prompt})
        usage, cost = self._with_prior(leg, target, usage)
        spend.finished(usage, cost)
        log.info("stream on %s cut by its budget after %d output tokens (cost %s)", target.name,
                 usage.output_tokens, cost)  # fmt: skip
        latency = (time.perf_counter() - leg.started) * 1000
        return FinishEvent(finish_reason="budget_exceeded", usage=usage, cost_usd=cost, latency_ms=latency,
                           attempts=leg.attempts)  # fmt: skip
