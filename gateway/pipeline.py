"""The request pipeline of one replica: plan, admit against budgets, run the plan, shape the result (complete,
stream, embed). Each step is its own module; this one puts them in order."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from decimal import Decimal
from typing import TypeVar

from gateway.budgets.admission import Admission
from gateway.budgets.spending import Spending
from gateway.call_budget import CallLimits, apply_call_budget, embeddings_fit
from gateway.config import ModelEntry
from gateway.continuation import continuation, resumable
from gateway.control.replica import ReplicaControl
from gateway.limits.admission import RateAdmission
from gateway.limits.gate import Ticket
from gateway.plans import Plans, check_capabilities
from gateway.pricing import Pricer
from gateway.providers import ProviderRegistry, Target
from gateway.routing.breaker import BreakerBoard
from gateway.routing.planner import Candidate, RoutePlan, estimate_prompt_tokens
from gateway.routing.policy import RoutingPolicy
from gateway.runner import Limits, PlanRunner, RunOptions, request_deadline
from gateway.safety.screen import CallSafety, Safety
from gateway.schema import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ErrorEvent,
    ErrorKind,
    FinishEvent,
    GatewayError,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from gateway.spend import CallSpend
from gateway.stream_relay import Leg, Opened, Progress, StreamRelay
from gateway.tokens import TokenEstimator, estimate_text_tokens

__all__ = ["Pipeline", "check_capabilities"]
log = logging.getLogger("gateway.pipeline")
T = TypeVar("T")


class Pipeline:
    """Everything one request does inside a replica (no Ray here: the control plane arrives as a ReplicaControl).

    Give either `policy` (a local control plane: tests, notebooks) or `control` (which carries the policy).
    """

    def __init__(self, registry: ProviderRegistry, pricer: Pricer, policy: RoutingPolicy | None = None, *,  # noqa: PLR0913 -- the optional features, keyword-only
                 control: ReplicaControl | None = None, spending: Spending | None = None,
                 tokens: TokenEstimator | None = None, usage_every: int = 20,
                 limits: RateAdmission | None = None, safety: Safety | None = None) -> None:  # fmt: skip
        if policy is not None and control is not None:
            raise TypeError("Pipeline takes `policy` (for a local control plane) or `control`, not both")
        self._registry, self._pricer, self.spending = registry, pricer, spending
        self.control = control or ReplicaControl("local", policy)
        self._plans = Plans(registry, pricer, self.control)
        self._admission = Admission(spending, self._plans.servable) if spending is not None else None
        self._tokens = tokens or TokenEstimator()
        self.limits, self.safety = limits, safety
        self._runner = PlanRunner(registry, self.control)
        self._relay = StreamRelay(self.control, spending, self._cost, self._counter, usage_every)

    @property
    def breakers(self) -> BreakerBoard:
        return self.control.board

    def plan(self, request: ChatRequest) -> RoutePlan:
        """The candidates to try, in order (a requested model's missing capability is named as a field error)."""
        return self._plans.chat(request)

    # --- the steps every chat call takes ------------------------------------------------------------------
    async def _admit(self, request: ChatRequest) -> tuple[ChatRequest, RoutePlan, CallSpend, CallLimits | None]:
        """Plan, then the caller's call budget and the scoped budgets (reserve, or shrink / downgrade / refuse):
        the request as admitted, the plan narrowed to what they kept, the call's spend and its call limits."""
        plan, limits = self.plan(request), None
        if request.metadata.budget is not None:
            request, kept, limits = apply_call_budget(request, self._plans.entries(plan), self._price,
                                                      self._prompt_tokens(request))  # fmt: skip
            plan = _keep(plan, kept, "over the call's budget")
        if self._admission is None:
            spend = CallSpend(decision=limits.header if limits else None)
        else:
            admitted = await self._admission.admit(request, self._plans.entries(plan))
            if list(admitted.entries) != [c.model for c in plan.candidates]:
                why = f"downgraded by budget {admitted.decision.budget if admitted.decision else ''}"
                plan = RoutePlan(plan.task_class, tuple(Candidate(m, why) for m in admitted.entries), plan.skipped)
            decided = admitted.decision.header if admitted.decision else None
            headers = [h for h in (decided, limits and limits.header) if h]
            request, spend = admitted.request, CallSpend(admitted.hold, " | ".join(headers) or None)
        if self.limits is not None and self.limits.applies(request.metadata):  # no limit: no entries built
            rate, entries, prompt = self.limits, self._plans.entries(plan), spend.hold.prompt if spend.hold else None
            await self._rate_limited(spend, lambda: rate.admit(request, entries, prompt))
        return request, plan, spend, limits

    async def _rate_limited(self, spend: CallSpend, admit: Callable[[], Awaitable[Ticket | None]]) -> None:
        """The call's rate-limit ticket (429 when a limit cannot admit it: its budget reservation then goes back,
        nothing was sent)."""
        assert self.limits is not None
        try:
            spend.ticket = await admit()
        except GatewayError:
            spend.settle(self.spending)
            raise
        spend.limits = self.limits.gate

    def _options(self, request: ChatRequest | EmbeddingsRequest, spend: CallSpend, stream: bool,
                 tokens: Callable[[], int]) -> RunOptions:  # fmt: skip
        policy = self.control.policy
        return RunOptions(
            stream=stream, deadline=request_deadline(request, policy.deadline_s if policy is not None else None),
            tokens=tokens, latency_target_ms=request.metadata.latency_target_ms,
            discard=_close_opened if stream else None, abandon=spend.abandon if spend.metered else None,
        )  # fmt: skip

    async def _settled(self, spend: CallSpend, run: Awaitable[T]) -> T:
        """`run`, with the call's spend booked if it fails (only what failed attempts were billed)."""
        try:
            return await run
        except BaseException:
            spend.settle(self.spending)
            raise

    # --- complete -------------------------------------------------------------------------------------------
    def _guards(self, request: ChatRequest | EmbeddingsRequest) -> CallSafety | None:
        """The call's safety screening (None: no guard applies to this caller and model)."""
        return self.safety.for_call(request.metadata, request.model) if self.safety is not None else None

    async def _screened(self, request: ChatRequest) -> tuple[ChatRequest, CallSafety | None]:
        """The input stage of the call's guards (before budgets and routing: a blocked call costs nothing)."""
        call = self._guards(request)
        return (await call.request(request) if call is not None else request), call

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        request, guards = await self._screened(request)
        request, plan, spend, _ = await self._admit(request)
        provider = self._registry.provider

        async def once(target: Target, _: Limits) -> ChatResponse:
            return await provider(target.provider).complete(request, target)

        options = self._options(request, spend, False, lambda: _rate_tokens(request))
        run, attempts = await self._settled(spend, self._runner.run(plan, once, options))
        response, target = run.result, run.target
        cost = self._cost(target, response.upstream_model, response.usage)
        spend.on(target.entry)
        spend.finished(response.usage, cost)
        spend.settle(self.spending)
        if guards is not None:
            response = await guards.response(response)
        latency = (time.perf_counter() - started) * 1000
        return response.model_copy(update={"attempts": attempts, "latency_ms": latency, "cost_usd": cost,
                                           "route": plan.header, "budget": spend.decision, "rate": spend.rate,
                                           "safety": guards.header() if guards is not None else None})  # fmt: skip

    # --- stream ---------------------------------------------------------------------------------------------
    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Typed events: start, deltas, running usage, then finish — or an error event once started.

        Until the first token the plan is retried, hedged and fallen back along; an error then is raised (the
        ingress turns it into an HTTP error). After that a break ends with an ErrorEvent that never looks like a
        finish — unless the policy lets a prefill-capable candidate continue from the text already sent. The
        call's budgets are settled however the stream ends.
        """
        started = time.perf_counter()
        request, guards = await self._screened(request)
        request, plan, spend, limits = await self._admit(request)
        try:  # the relays are closed (their spend counted) before the call settles
            leg, progress = await self._first_leg(request, plan, spend, started)
            async with aclosing(self._relay.relay(leg, progress, spend, limits)) as events:
                async for event in guards.stream(events) if guards is not None else events:
                    yield event
            if progress.broken is not None:
                cont = await self._continued(request, plan, leg, progress, spend)
                if isinstance(cont, ErrorEvent):
                    yield cont
                else:
                    async with aclosing(self._relay.relay(cont, Progress(None), spend, limits)) as events:
                        async for event in guards.stream(events) if guards is not None else events:
                            yield event
        finally:
            spend.settle(self.spending)

    async def _first_leg(self, request: ChatRequest, plan: RoutePlan, spend: CallSpend,
                         started: float) -> tuple[Leg, Progress]:  # fmt: skip
        """The plan's stream opened, and what to keep of it (its text, when it could be continued)."""
        options = self._options(request, spend, True, lambda: _rate_tokens(request))
        run, attempts = await self._runner.run(plan, self._opener(request), options)
        policy = self.control.policy
        keep_text = resumable(plan, self._registry.catalog, policy is not None and policy.streaming.continue_on_break)
        return Leg(run, attempts, plan.header, started, options.deadline), Progress([] if keep_text else None)

    async def _continued(self, request: ChatRequest, plan: RoutePlan, leg: Leg, progress: Progress,
                         spend: CallSpend) -> Leg | ErrorEvent:  # fmt: skip
        """A broken stream's continuation opened on a prefill-capable candidate; else the break's error event."""
        broken = progress.broken
        assert broken is not None
        broke_on = leg.run.target
        cont = None if progress.tools else continuation(request, plan, broke_on.name, "".join(progress.text or ()),
                                                        progress.output_tokens, self._registry.catalog)  # fmt: skip
        try:
            if cont is None:
                raise broken
            options = self._options(cont[0], spend, True, lambda: _rate_tokens(cont[0]))
            run, more = await self._runner.run(cont[1], self._opener(cont[0]), options)
        except GatewayError:
            return ErrorEvent(error=broken.to_info(), usage=spend.billed())
        log.info("stream from %s broke after %d deltas (%s); %s continues it", broke_on.name, progress.deltas,
                 broken.kind.value, run.target.name)  # fmt: skip
        usage = spend.billed() or Usage()
        if not usage.input_tokens:
            usage = usage + Usage(input_tokens=estimate_prompt_tokens(request))
        spend.prior = cost = self._cost(broke_on, broke_on.upstream, usage)
        return Leg(run, leg.attempts + more, None, leg.started, leg.deadline, (usage, cost))

    def _opener(self, request: ChatRequest):  # type: ignore[no-untyped-def]
        async def open_on(target: Target, _: Limits) -> Opened:
            return await self._open(request, target)

        return open_on

    async def _open(self, request: ChatRequest, target: Target) -> Opened:
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

    # --- embed ----------------------------------------------------------------------------------------------
    async def embed(self, request: EmbeddingsRequest) -> EmbeddingsResponse:
        started = time.perf_counter()
        guards = self._guards(request)
        if guards is not None:
            request = await guards.embeddings(request)
        plan = self._plans.embeddings(request)
        if request.metadata.budget is not None:
            plan = _keep(plan, embeddings_fit(request, self._plans.entries(plan), self._price, self._input_tokens),
                         "over the call's budget")  # fmt: skip
        hold = None
        if self._admission is not None:
            hold = await self._admission.admit_embeddings(request, self._plans.entries(plan))
        spend = CallSpend(hold)
        if self.limits is not None and self.limits.applies(request.metadata):
            rate, entries = self.limits, self._plans.entries(plan)
            await self._rate_limited(
                spend, lambda: rate.admit_embeddings(request, entries, hold.prompt if hold else None)
            )
        provider = self._registry.provider

        async def once(target: Target, _: Limits) -> EmbeddingsResponse:
            return await provider(target.provider).embed(request, target)

        def tokens() -> int:
            return estimate_text_tokens(request.texts)

        run, attempts = await self._settled(spend, self._runner.run(plan, once, self._options(request, spend, False,
                                                                                              tokens)))  # fmt: skip
        cost = self._cost(run.target, run.result.upstream_model, run.result.usage)
        spend.on(run.target.entry)
        spend.finished(run.result.usage, cost)
        spend.settle(self.spending)
        latency = (time.perf_counter() - started) * 1000
        return run.result.model_copy(
            update={
                "latency_ms": latency,
                "attempts": attempts,
                "route": plan.header,
                "cost_usd": cost,
                "rate": spend.rate,
                "safety": guards.header() if guards is not None else None,
            }
        )

    # --- prices and counts ----------------------------------------------------------------------------------
    def _cost(self, target: Target, reported_model: str, usage: Usage) -> Decimal | None:
        model = target.entry.price_as or reported_model
        return self._pricer.cost(self._registry.kind(target.provider), model, usage)

    def _price(self, entry: ModelEntry, usage: Usage) -> Decimal | None:
        return self._pricer.cost(self._registry.kind(entry.provider), entry.price_as or entry.upstream, usage)

    def _counter(self, target: Target) -> Callable[[str], int]:
        return self._tokens.counter(self._registry.kind(target.provider), target.upstream)

    def _prompt_tokens(self, request: ChatRequest):  # type: ignore[no-untyped-def]
        def count(_: str, entry: ModelEntry) -> int:
            return self._tokens.prompt_tokens(request, entry, self._registry.kind(entry.provider))

        return count

    def _input_tokens(self, texts: tuple[str, ...], entry: ModelEntry) -> int:
        return self._tokens.input_tokens(texts, entry, self._registry.kind(entry.provider))

    async def aclose(self) -> None:
        await self._registry.aclose()
        if self.safety is not None:
            await self.safety.aclose()


def _keep(plan: RoutePlan, kept: list[str], why: str) -> RoutePlan:
    """`plan` with only the `kept` candidates; the others are listed as skipped for `why`."""
    if len(kept) == len(plan.candidates):
        return plan
    dropped = tuple((c.model, why) for c in plan.candidates if c.model not in kept)
    return RoutePlan(plan.task_class, tuple(c for c in plan.candidates if c.model in kept),
                     plan.skipped + dropped, plan.kind)  # fmt: skip


def _rate_tokens(request: ChatRequest) -> int:
    """What one attempt draws from its provider's rate lease: the prompt estimate and the output allowance."""
    return estimate_prompt_tokens(request) + (request.max_tokens or 0)


async def _close_opened(opened: Opened) -> None:
    await opened[0].aclose()  # type: ignore[attr-defined]
