"""The request pipeline of one replica: plan the route, run it, shape the result (complete, stream, embed)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal

from gateway.auth.models import check_model, scope_plan
from gateway.budgets.admission import Admission, Admitted
from gateway.budgets.meter import StreamMeter
from gateway.budgets.spending import Hold, Spending
from gateway.config import ModelEntry
from gateway.control.replica import ReplicaControl
from gateway.pricing import Pricer
from gateway.providers import ProviderRegistry, Target
from gateway.routing.breaker import BreakerBoard
from gateway.routing.planner import AUTO, Candidate, RoutePlan, estimate_prompt_tokens, plan_embeddings, plan_route
from gateway.routing.policy import RoutingPolicy
from gateway.runner import Attempt, Limits, PlanRunner, request_deadline
from gateway.schema import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ErrorEvent,
    ErrorKind,
    FinishEvent,
    GatewayError,
    Message,
    StartEvent,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
    validation_error,
)

log = logging.getLogger("gateway.pipeline")


Opened = tuple[AsyncIterator[StreamEvent], list[StreamEvent]]
# Breaks after which a stream may continue elsewhere (a refusal or a bad request would not get better).
_CONTINUABLE = frozenset({ErrorKind.TRUNCATED_STREAM, ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.SERVER,
                          ErrorKind.OVERLOADED, ErrorKind.INVALID_RESPONSE})  # fmt: skip


@dataclass
class _Progress:
    """What a stream has sent so far; `text` is kept only when the stream could be continued."""

    text: list[str] | None
    deltas: int = 0
    tools: bool = False
    broken: GatewayError | None = None


@dataclass
class _Spend:
    """What a call has cost so far, for settling its budget reservation however it ends."""

    entry: ModelEntry | None = None
    usage: Usage | None = None
    cost: Decimal | None = None  # set by a finish (both parts of a continued stream included)
    deltas: int = 0
    prior: Decimal | None = None  # a broken stream's cost, when another candidate continues it
    reported: Usage | None = None  # usage the provider reported mid-stream (Anthropic's input at message start)
    hold: Hold | None = None  # with budgets: the reservation a stream is metered against
    decision: str | None = None  # the budget decision, for the start event
    cut: bool = False  # the stream was ended by its budget
    abandoned: list[tuple[Target, Usage | None]] = field(default_factory=list)  # attempts billed without an answer

    def abandon(self, target: Target, usage: Usage | None) -> None:
        self.abandoned.append((target, usage))

    def billed(self) -> Usage | None:
        """What the provider bills: the usage it reported (finally or so far), never less output than was
        streamed."""
        known = self.usage or self.reported
        if known is None:
            return Usage(output_tokens=self.deltas) if self.deltas else None
        if known.output_tokens >= self.deltas:
            return known
        return known.model_copy(update={"output_tokens": self.deltas})  # e.g. a message start's count of 1


async def _chain(head: Iterable[StreamEvent], rest: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
    for event in head:
        yield event
    async for event in rest:
        yield event


def check_capabilities(request: ChatRequest, target: Target) -> None:
    """Refuse a request the chosen model cannot serve, naming the field."""
    caps = target.entry.capabilities
    if request.has_images and not caps.images:
        raise validation_error("messages", f"model `{target.name}` does not accept image input")
    if request.tools and not caps.tools:
        raise validation_error("tools", f"model `{target.name}` does not support tool calls")
    if request.wants_json and not caps.json_mode:
        raise validation_error("response_format", f"model `{target.name}` does not support JSON mode")
    if request.stream and not caps.streaming:
        raise validation_error("stream", f"model `{target.name}` does not support streaming")
    limit = target.entry.max_output_tokens
    if limit is not None and request.max_tokens is not None and request.max_tokens > limit:
        raise validation_error(
            "max_tokens", f"{request.max_tokens} exceeds the {limit} output tokens of `{target.name}`"
        )


class Pipeline:
    """Everything one request does inside a replica (no Ray here: the control plane arrives as a ReplicaControl)."""

    def __init__(self, registry: ProviderRegistry, pricer: Pricer, policy: RoutingPolicy | None = None, *,
                 control: ReplicaControl | None = None, spending: Spending | None = None,
                 usage_every: int = 20) -> None:  # fmt: skip
        self._registry = registry
        self._pricer = pricer
        self.spending = spending
        self._admission = Admission(spending, self._servable) if spending is not None else None
        self.control = control or ReplicaControl("local", policy)
        self._runner = PlanRunner(registry, self.control)
        self._usage_every = usage_every

    @property
    def breakers(self) -> BreakerBoard:
        return self.control.board

    def plan(self, request: ChatRequest) -> RoutePlan:
        """The candidates to try, in order (a requested model's missing capability is named as a field error)."""
        principal = request.metadata.principal
        if request.model != AUTO:
            check_model(principal, request.model)
            check_capabilities(request, self._registry.target(request.model))
        plan = plan_route(request, self.control.policy, self._registry.catalog)
        return self._priced(scope_plan(principal, plan, request.model))

    def _priced(self, plan: RoutePlan) -> RoutePlan:
        """Candidates whose calls cannot be charged are skipped: a call is never recorded as $0."""
        keep, skipped = [], list(plan.skipped)
        for candidate in plan.candidates:
            entry = self._registry.catalog[candidate.model]
            if self._pricer.has_price(self._registry.kind(entry.provider), entry.price_as or entry.upstream):
                keep.append(candidate)
            else:
                skipped.append((candidate.model, "no known price (add it to the price table)"))
        if not keep:
            why = "; ".join(f"{m}: {r}" for m, r in skipped)
            raise GatewayError(ErrorKind.BAD_REQUEST, f"no model with a known price can serve this request ({why})",
                               param="model", code="model_unpriced")  # fmt: skip
        return (
            plan if len(keep) == len(plan.candidates) else replace(plan, candidates=tuple(keep), skipped=tuple(skipped))
        )

    def _cost(self, target: Target, reported_model: str, usage: Usage) -> Decimal | None:
        model = target.entry.price_as or reported_model
        return self._pricer.cost(self._registry.kind(target.provider), model, usage)

    def _servable(self, request: ChatRequest, names: tuple[str, ...]) -> dict[str, ModelEntry]:
        """Catalog models (by name, in order) that can serve `request` and have a price: a downgrade's targets."""
        out, principal = {}, request.metadata.principal
        for name in names:
            entry = self._registry.catalog.get(name)
            if entry is None or entry.kind != "chat" or (principal is not None and not principal.allows_model(name)):
                continue
            try:
                check_capabilities(request, self._registry.target(name))
            except GatewayError:
                continue
            if self._pricer.has_price(self._registry.kind(entry.provider), entry.price_as or entry.upstream):
                out[name] = entry
        return out

    async def _admit(self, request: ChatRequest, plan: RoutePlan) -> tuple[Admitted, RoutePlan]:
        """Budgets' admission (reserve, or shrink / downgrade / refuse); the plan narrowed to what it kept."""
        assert self._admission is not None
        entries = {c.model: self._registry.catalog[c.model] for c in plan.candidates}
        admitted = await self._admission.admit(request, entries)
        if list(admitted.entries) != list(entries):
            why = f"downgraded by budget {admitted.decision.budget if admitted.decision else ''}"
            plan = RoutePlan(plan.task_class, tuple(Candidate(m, why) for m in admitted.entries), plan.skipped)
        return admitted, plan

    def _settle(self, hold: Hold | None, spend: _Spend) -> None:
        """Book a call's spend: the finish's cost, else its billed usage (the prompt estimate added when only
        output was counted), else nothing (it failed before anything was billed)."""
        if hold is None or self.spending is None:
            return
        usage = spend.billed()
        if spend.cost is None and usage is not None and usage.output_tokens and not usage.input_tokens:
            usage = usage + Usage(input_tokens=hold.input_tokens)
        cost = spend.cost
        if cost is None and spend.prior is not None:  # a continuation that broke too: both parts were billed
            billed = usage is not None and spend.entry is not None and usage.total_tokens > 0
            cost = spend.prior + (self.spending.price(spend.entry, usage) if billed else Decimal(0))  # type: ignore[arg-type]
        extra = []  # failed, timed-out and lost-hedge attempts: their reported usage, else the prompt estimate
        for target, used in spend.abandoned:
            used = used or Usage(input_tokens=hold.prompt.get(target.name, hold.input_tokens))
            extra.append((self.spending.price(target.entry, used), used.total_tokens))
        self.spending.settle(hold, spend.entry, usage, cost, extra)

    def _deadline(self, request: ChatRequest | EmbeddingsRequest) -> float:
        policy = self.control.policy
        return request_deadline(request, policy.deadline_s if policy is not None else None)

    @staticmethod
    def _tokens(request: ChatRequest) -> Callable[[], int]:
        return lambda: estimate_prompt_tokens(request) + (request.max_tokens or 0)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        plan = self.plan(request)
        hold, decision = None, None
        if self._admission is not None:
            admitted, plan = await self._admit(request, plan)
            request, hold = admitted.request, admitted.hold
            decision = admitted.decision.header if admitted.decision is not None else None
        provider = self._registry.provider

        async def once(target: Target, _: Limits) -> ChatResponse:
            return await provider(target.provider).complete(request, target)

        spend = _Spend()
        run_plan = self._runner.run(plan, once, stream=False, deadline=self._deadline(request),
                                    tokens=self._tokens(request), latency_target_ms=request.metadata.latency_target_ms,
                                    abandon=spend.abandon if hold is not None else None)  # fmt: skip
        if hold is None:
            run, attempts = await run_plan
        else:
            try:
                run, attempts = await run_plan
            except BaseException:
                self._settle(hold, spend)  # only what failed attempts were billed (their usage, or the prompt)
                raise
        response, target = run.result, run.target
        latency = (time.perf_counter() - started) * 1000
        cost = self._cost(target, response.upstream_model, response.usage)
        if hold is not None:
            spend.entry, spend.usage, spend.cost = target.entry, response.usage, cost
            self._settle(hold, spend)
        return response.model_copy(
            update={
                "attempts": attempts,
                "latency_ms": latency,
                "cost_usd": cost,
                "route": plan.header,
                "budget": decision,
            }
        )

    async def _open(self, request: ChatRequest, target: Target) -> tuple[AsyncIterator[StreamEvent], list[StreamEvent]]:
        """Open a stream on `target` and read up to its first content (or its finish): a failure or silence until
        then is the attempt's, so it is retried or falls back before the client has seen a byte."""
        events = self._registry.provider(target.provider).stream(request, target)
        head: list[StreamEvent] = []
        try:
            async for event in events:
                head.append(event)
                if isinstance(event, TextDelta | ToolCallDelta | FinishEvent | ErrorEvent):
                    return events, head
            raise GatewayError(ErrorKind.TRUNCATED_STREAM, "the stream ended before its first token",
                               provider=target.provider, model=target.name)  # fmt: skip
        except BaseException:
            await events.aclose()  # type: ignore[attr-defined]
            raise

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Typed events: start, deltas, running usage, then finish — or an error event once started.

        Until the first token the plan is retried, hedged and fallen back along; an error then is raised (the
        ingress turns it into an HTTP error). After that a break ends with an ErrorEvent that never looks like a
        finish — unless the policy lets a prefill-capable candidate continue from the text already sent. With
        budgets on, the call's reservation is settled however the stream ends (no extra layer without them).
        """
        return self._budgeted(request) if self.spending is not None else self._stream(request, _Spend())

    async def _budgeted(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        admitted, plan = await self._admit(request, self.plan(request))
        decision = admitted.decision.header if admitted.decision is not None else None
        spend = _Spend(hold=admitted.hold, decision=decision)
        try:
            async for event in self._stream(admitted.request, spend, plan):
                yield event
        finally:
            self._settle(admitted.hold, spend)

    async def _stream(
        self, request: ChatRequest, spend: _Spend, plan: RoutePlan | None = None
    ) -> AsyncIterator[StreamEvent]:
        started = time.perf_counter()
        plan = plan or self.plan(request)
        deadline = self._deadline(request)
        run, attempts = await self._open_plan(request, plan, deadline, spend)
        policy = self.control.policy
        catalog = self._registry.catalog
        resumable = (
            policy is not None
            and policy.streaming.continue_on_break
            and any(catalog[c.model].capabilities.prefill for c in plan.candidates)
        )
        progress = _Progress([] if resumable else None)
        async for event in self._relay(run, attempts, plan.header, started, deadline, progress, spend):
            yield event
        if progress.broken is None:
            return
        broken, cont = progress.broken, self._continuation(request, plan, run.target.name, progress)
        try:
            if cont is None:
                raise broken
            crun, more = await self._open_plan(cont[0], cont[1], deadline, spend)
        except GatewayError:
            yield ErrorEvent(error=broken.to_info(), usage=broken.usage)
            return
        log.info("stream from %s broke after %d deltas (%s); %s continues it", run.target.name, progress.deltas,
                 broken.kind.value, crun.target.name)  # fmt: skip
        usage = broken.usage or Usage(input_tokens=estimate_prompt_tokens(request), output_tokens=progress.deltas)
        if not usage.input_tokens:
            usage = usage + Usage(input_tokens=estimate_prompt_tokens(request))
        cost = self._cost(run.target, run.target.upstream, usage)
        spend.prior = cost
        progress = _Progress(None)
        async for event in self._relay(crun, attempts + more, None, started, deadline, progress, spend, (usage, cost)):
            yield event

    async def _open_plan(
        self, request: ChatRequest, plan: RoutePlan, deadline: float, spend: _Spend
    ) -> tuple[Attempt[Opened], int]:
        async def discard(opened: Opened) -> None:
            await opened[0].aclose()  # type: ignore[attr-defined]

        return await self._runner.run(
            plan, lambda t, _: self._open(request, t), stream=True, deadline=deadline,
            tokens=self._tokens(request), discard=discard, latency_target_ms=request.metadata.latency_target_ms,
            abandon=spend.abandon if spend.hold is not None else None,
        )  # fmt: skip

    def _continuation(
        self, request: ChatRequest, plan: RoutePlan, broke: str, progress: _Progress
    ) -> tuple[ChatRequest, RoutePlan] | None:
        """The request that continues a broken text stream (the sent text as an assistant prefill) and the
        prefill-capable candidates to send it to: those after the broken one first, the broken one last."""
        text = "".join(progress.text or ())
        left = request.max_tokens - progress.deltas if request.max_tokens is not None else None
        if not text or progress.tools or (left is not None and left < 1):
            return None
        names = [c.model for c in plan.candidates if self._registry.catalog[c.model].capabilities.prefill]
        if broke in names:
            i = names.index(broke)
            names = names[i + 1 :] + names[: i + 1]
        if not names:
            return None
        messages = (*request.messages, Message(role="assistant", content=text))
        continued = request.model_copy(update={"messages": messages, "max_tokens": left, "fallbacks": ()})
        candidates = tuple(Candidate(m, f"continues the broken stream of {broke}") for m in names)
        return continued, RoutePlan(plan.task_class, candidates)

    async def _relay(
        self, run: Attempt[Opened], attempts: int, route: str | None, started: float, deadline: float,
        progress: _Progress, spend: _Spend, prior: tuple[Usage, Decimal | None] | None = None,
    ) -> AsyncIterator[StreamEvent]:  # fmt: skip
        """One opened stream to the client. `route` None: a continuation (its start event is not sent again);
        `prior`: the usage and cost of the broken stream it continues, added to its finish."""
        (events, head), target = run.result, run.target
        spend.entry, spend.usage, spend.deltas, spend.reported = target.entry, None, 0, None  # this stream's own
        meter = None if spend.hold is None or self.spending is None else StreamMeter(
            self.spending, spend.hold, target.entry, target.name, prior[1] if prior else None)  # fmt: skip
        ends = min(run.t0 + run.limits.total, deadline)
        outcome: GatewayError | None = None
        finished = False
        try:
            async for event in _chain(head, events):
                if time.perf_counter() > ends:  # silence is bounded by the read timeout; this bounds trickling
                    raise GatewayError(ErrorKind.TRUNCATED_STREAM, "the stream exceeded its total time limit",
                                       provider=target.provider, model=target.name,
                                       usage=Usage(output_tokens=progress.deltas))  # fmt: skip
                if isinstance(event, TextDelta | ToolCallDelta):
                    progress.deltas += 1
                    spend.deltas += 1
                    if progress.text is not None:
                        if isinstance(event, TextDelta):
                            progress.text.append(event.text)
                        else:
                            progress.tools = True
                    if meter is not None and meter.limit is not None and spend.deltas > meter.limit:
                        if await meter.exhausted(spend.deltas):  # not relayed, but billed: counted
                            yield self._cut(spend, target, meter.input_tokens, started, attempts, prior)
                            finished = True
                            break
                    yield event
                    if progress.deltas % self._usage_every == 0:
                        yield UsageEvent(usage=Usage(output_tokens=progress.deltas))
                elif isinstance(event, FinishEvent):
                    usage = event.usage
                    cost = self._cost(target, target.upstream, usage)
                    if prior is not None:
                        usage = usage + prior[0]
                        cost = cost + prior[1] if cost is not None and prior[1] is not None else None
                    finished = True
                    spend.usage, spend.cost = usage, cost
                    latency = (time.perf_counter() - started) * 1000
                    yield event.model_copy(update={"latency_ms": latency, "attempts": attempts, "cost_usd": cost,
                                                   "usage": usage})  # fmt: skip
                elif isinstance(event, UsageEvent):  # the provider's own count so far (kept, not relayed)
                    spend.reported = event.usage
                    if meter is not None:
                        meter.reported_input(event.usage.input_tokens)
                elif isinstance(event, StartEvent):
                    if route is not None:
                        yield event.model_copy(update={"attempt": attempts, "route": route, "budget": spend.decision})
                else:
                    yield event
        except GatewayError as exc:
            outcome = exc
            spend.usage = exc.usage
            if progress.text is not None and progress.deltas and exc.kind in _CONTINUABLE:
                progress.broken = exc  # the caller may continue it elsewhere
            else:
                yield ErrorEvent(error=exc.to_info(), usage=exc.usage)
        except Exception as exc:  # a bug or an unmapped failure must still end the stream visibly
            yield ErrorEvent(error=GatewayError(ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}").to_info())
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            latency = (time.perf_counter() - run.t0) * 1000 if finished else None  # a client that left says nothing
            self.control.record(target.provider, target.name, run.started_at, outcome, latency, run.first_ms)

    def _cut(self, spend: _Spend, target: Target, input_tokens: int, started: float, attempts: int,
             prior: tuple[Usage, Decimal | None] | None) -> FinishEvent:  # fmt: skip
        """The finish of a stream its budgets ended: budget_exceeded, with what was billed up to here."""
        spend.cut = True
        usage = spend.billed() or Usage()
        if not usage.input_tokens:
            usage = usage.model_copy(update={"input_tokens": input_tokens})
        cost = self._cost(target, target.upstream, usage)
        if prior is not None:
            usage = usage + prior[0]
            cost = cost + prior[1] if cost is not None and prior[1] is not None else None
        spend.usage, spend.cost = usage, cost
        log.info("stream on %s cut by its budget after %d output tokens (cost %s)", target.name, spend.deltas, cost)
        latency = (time.perf_counter() - started) * 1000
        return FinishEvent(finish_reason="budget_exceeded", usage=usage, cost_usd=cost, latency_ms=latency,
                           attempts=attempts)  # fmt: skip

    async def embed(self, request: EmbeddingsRequest) -> EmbeddingsResponse:
        started = time.perf_counter()
        principal = request.metadata.principal
        if request.model != AUTO:
            check_model(principal, request.model)
        plan = plan_embeddings(request, self.control.policy, self._registry.catalog)
        plan = self._priced(scope_plan(principal, plan, request.model))
        if request.model != AUTO:
            target = self._registry.target(request.model, kind="embedding")
            dims = target.entry.dimensions
            if request.dimensions is not None and dims is not None and request.dimensions > dims:
                raise validation_error(
                    "dimensions", f"{request.dimensions} exceeds the {dims} dimensions of `{target.name}`"
                )
        provider = self._registry.provider

        async def once(target: Target, _: Limits) -> EmbeddingsResponse:
            return await provider(target.provider).embed(request, target)

        hold, spend = None, _Spend()
        if self._admission is not None:
            entries = {c.model: self._registry.catalog[c.model] for c in plan.candidates}
            hold = await self._admission.admit_embeddings(request, entries)
        try:
            run, attempts = await self._runner.run(
                plan, once, stream=False, deadline=self._deadline(request),
                tokens=lambda: sum(len(t) for t in request.texts) // 4 + len(request.texts),
                abandon=spend.abandon if hold is not None else None,
            )  # fmt: skip
        except BaseException:
            self._settle(hold, spend)
            raise
        latency = (time.perf_counter() - started) * 1000
        cost = self._cost(run.target, run.result.upstream_model, run.result.usage)
        spend.entry, spend.usage, spend.cost = run.target.entry, run.result.usage, cost
        self._settle(hold, spend)
        return run.result.model_copy(
            update={"latency_ms": latency, "attempts": attempts, "route": plan.header, "cost_usd": cost}
        )

    async def aclose(self) -> None:
        await self._registry.aclose()
