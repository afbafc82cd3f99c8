"""Runs a route plan: one attempt at a time (or two, hedged), with breakers, rate leases, deadlines, timeouts,
retries and fallbacks. What an attempt does (complete, or open a stream up to its first token) is passed in."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.config import TimeoutOverrides
from gateway.control.replica import ReplicaControl
from gateway.providers import ProviderRegistry, Target
from gateway.routing.planner import RoutePlan
from gateway.routing.policy import Retry
from gateway.routing.retry import decide
from gateway.schema import ChatRequest, EmbeddingsRequest, ErrorKind, GatewayError, Usage

log = logging.getLogger("gateway.runner")
T = TypeVar("T")
NO_OVERRIDES = TimeoutOverrides()  # frozen


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one attempt, in seconds, already clipped to the request's deadline."""

    first_token: float
    total: float


@dataclass(frozen=True, slots=True)
class Attempt(Generic[T]):
    result: T
    target: Target
    started_at: float  # wall clock, for the outcome record
    t0: float  # perf_counter at the attempt's start
    first_ms: float  # time to the attempt's result (a stream's first token)
    limits: Limits


Once = Callable[[Target, Limits], Awaitable[T]]
Abandon = Callable[[Target, "Usage | None"], None]  # an attempt that may be billed without answering


def request_deadline(request: ChatRequest | EmbeddingsRequest, default_s: float | None) -> float:
    """The request's deadline on the perf_counter clock: the turn deadline, its own timeout, or the default."""
    now, meta = time.perf_counter(), request.metadata
    bounds = [meta.deadline - time.time()] if meta.deadline is not None else []
    if meta.timeout_ms is not None:
        bounds.append(meta.timeout_ms / 1000)
    if not bounds and default_s is not None:
        bounds.append(default_s)
    return now + min(bounds) if bounds else math.inf


class PlanRunner:
    def __init__(self, registry: ProviderRegistry, control: ReplicaControl) -> None:
        self._registry = registry
        self.control = control

    def limits(self, target: Target, plan: RoutePlan, deadline: float) -> Limits:
        """Provider timeouts, tightened by the model's and the task class's, clipped to the time left."""
        t = self._registry.timeouts(target.provider)
        first, total = t.first_token, t.total
        policy = self.control.policy
        chain = policy.task_classes.get(plan.task_class) if policy is not None and plan.task_class else None  # type: ignore[call-overload]
        for o in (target.entry.timeouts, chain.timeouts if chain else NO_OVERRIDES):
            first, total = o.first_token or first, o.total or total
        left = deadline - time.perf_counter()
        return Limits(min(first, total, left), min(total, left))

    async def _attempt(self, target: Target, limits: Limits, once: Once[T], stream: bool,
                       abandon: Abandon | None = None) -> Attempt[T]:  # fmt: skip
        """One call; its failure is recorded here, a stream's success by the caller when it ends. `abandon` hears
        of every attempt that may have been billed without answering: the provider's usage, or None when the
        gateway walked away (a timeout, a lost hedge, a client that left) and only the prompt can be assumed."""
        wall, t0 = time.time(), time.perf_counter()
        bound = limits.first_token if stream else limits.total
        try:
            async with asyncio.timeout(bound):
                result = await once(target, limits)
        except TimeoutError:
            what = "first token" if stream and bound < limits.total else "answer"
            error = GatewayError(ErrorKind.TIMEOUT, f"no {what} within {bound:.3g} s", provider=target.provider,
                                 model=target.name)  # fmt: skip
            self.control.record(target.provider, target.name, wall, error)
            if abandon is not None:
                abandon(target, None)
            raise error from None
        except GatewayError as exc:
            self.control.record(target.provider, target.name, wall, exc)
            if abandon is not None and exc.usage is not None and exc.usage.total_tokens:
                abandon(target, exc.usage)
            raise
        except asyncio.CancelledError:  # a hedge that lost, or a client that left: no health signal either way
            self.control.release(target.provider, target.name)
            if abandon is not None:
                abandon(target, None)
            if stream:  # but the first token took at least this long: keeps the p95 honest about its tail
                self.control.censored(target.provider, target.name, wall, (time.perf_counter() - t0) * 1000)
            raise
        first_ms = (time.perf_counter() - t0) * 1000
        if not stream:
            self.control.record(target.provider, target.name, wall, None, latency_ms=first_ms)
        return Attempt(result, target, wall, t0, first_ms, limits)

    def _blocked(self, target: Target, stream: bool, deadline: float) -> str | None:
        why = self.control.blocked(target.provider, target.name)
        if why is not None:
            return why
        view = self.control.shared(target.provider, target.name)
        expected = (view.ewma_ttft_ms if stream else view.ewma_latency_ms) if view is not None else None
        left = deadline - time.perf_counter()
        if expected is not None and expected / 1000 > left:
            return f"expected ~{expected / 1000:.2g} s, {max(left, 0):.2g} s left before the deadline"
        return None

    async def _admit(self, target: Target, tokens: Callable[[], int]) -> GatewayError | None:
        """Spend the provider's rate lease; an actor call only when it has run out."""
        if not self.control.limited(target.provider):
            return None
        need = tokens()
        if self.control.take(target.provider, need) or await self.control.refill_and_take(target.provider, need):
            return None
        return GatewayError(ErrorKind.RATE_LIMITED, f"the rate limit of `{target.provider}` is spent for this minute",
                            provider=target.provider, model=target.name,
                            retry_after=self.control.lease_window_end(target.provider))  # fmt: skip

    def _hedge_delay(self, plan: RoutePlan, target: Target, stream: bool) -> float | None:
        policy = self.control.policy
        if not stream or policy is None:
            return None
        chain = policy.task_classes.get(plan.task_class) if plan.task_class else None  # type: ignore[call-overload]
        enabled = chain.hedge if chain is not None and chain.hedge is not None else policy.hedging.enabled
        view = self.control.shared(target.provider, target.name)
        if not enabled or view is None or view.p95_ttft_ms is None or view.ttft_samples < policy.hedging.min_samples:
            return None
        return max(view.p95_ttft_ms, policy.hedging.min_delay_ms) / 1000

    def _by_latency_target(self, targets: list[Target], target_ms: float | None, stream: bool) -> list[Target]:
        """With a latency target, candidates observed to be slower than it (first token for a stream) move to
        the end, in their order; candidates without observations count as fast enough."""
        if target_ms is None:
            return targets

        def slow(t: Target) -> bool:
            view = self.control.shared(t.provider, t.name)
            observed = (view.ewma_ttft_ms if stream else view.ewma_latency_ms) if view is not None else None
            return observed is not None and observed > target_ms

        return sorted(targets, key=slow)

    async def run(self, plan: RoutePlan, once: Once[T], *, stream: bool, deadline: float, tokens: Callable[[], int],
                  discard: Callable[[T], Awaitable[None]] | None = None, latency_target_ms: float | None = None,
                  abandon: Abandon | None = None) -> tuple[Attempt[T], int]:  # fmt: skip
        """The first attempt that succeeds, and how many attempts it took; else the deciding error."""
        policy = self.control.policy
        rules = policy.retry if policy is not None else Retry()
        targets = self._by_latency_target([self._registry.target(c.model, plan.kind) for c in plan.candidates],
                                          latency_target_ms, stream)  # fmt: skip
        used: set[str] = set()  # hedge candidates already tried
        attempts = 0
        last: GatewayError | None = None
        for i, target in enumerate(targets):
            if target.name in used:
                continue
            tries = 0
            while True:
                if deadline - time.perf_counter() <= 0:
                    raise last or GatewayError(ErrorKind.TIMEOUT, "the request's deadline passed before an answer",
                                               retryable=False, fallbackable=False)  # fmt: skip
                why = self._blocked(target, stream, deadline)
                if why is not None:
                    log.info("skipping %s: %s", target.name, why)
                    wait = self.control.retry_in(target.provider, target.name) or None
                    last = last or GatewayError(
                        ErrorKind.OVERLOADED, f"`{target.name}` was skipped: {why}", provider=target.provider,
                        model=target.name, retry_after=wait,
                    )  # fmt: skip
                    break
                refused = await self._admit(target, tokens)
                if refused is not None:
                    self.control.release(target.provider, target.name)
                    last = refused
                    break
                attempts += 1
                tries += 1
                limits = self.limits(target, plan, deadline)
                try:
                    delay = self._hedge_delay(plan, target, stream)
                    backup = next((t for t in targets[i + 1 :] if t.name not in used), None) if delay else None
                    if backup is not None and delay is not None:
                        attempt, hedged = await self._race(target, backup, delay, plan, once, deadline, tokens, discard,
                                                           abandon)  # fmt: skip
                        attempts += hedged
                        if hedged:
                            used.add(backup.name)
                    else:
                        attempt = await self._attempt(target, limits, once, stream, abandon)
                    return attempt, attempts
                except GatewayError as exc:
                    last = exc
                    decision = decide(exc, tries, attempts, rules)
                    log.info("attempt %d on %s failed (%s): %s", attempts, target.name, exc.kind.value, decision.why)
                    if decision.action == "retry":
                        await asyncio.sleep(min(decision.delay_s, max(0.0, deadline - time.perf_counter())))
                        continue
                    if decision.action == "stop":
                        raise
                    break
        if last is None:
            raise GatewayError(ErrorKind.OVERLOADED, "no candidate could be tried")
        raise last

    async def _race(self, primary: Target, backup: Target, delay: float, plan: RoutePlan, once: Once[T],
                    deadline: float, tokens: Callable[[], int],
                    discard: Callable[[T], Awaitable[None]] | None,
                    abandon: Abandon | None = None) -> tuple[Attempt[T], int]:  # fmt: skip
        """Hedge: if `primary` has no first token after `delay`, start `backup` too; the first to succeed wins and
        the other is cancelled (its stream closed). Returns the winner and 1 if the backup was started."""
        first = asyncio.create_task(self._attempt(primary, self.limits(primary, plan, deadline), once, True, abandon))
        pending: set[asyncio.Task[Attempt[T]]] = {first}
        errors: dict[asyncio.Task[Attempt[T]], BaseException] = {}
        try:  # whatever happens here (the caller cancelled, too), no attempt outlives it unanswered
            done, _ = await asyncio.wait(pending, timeout=delay)
            if not done and self._blocked(backup, True, deadline) is None:
                if await self._admit(backup, tokens) is None:
                    log.info("hedging: %s has no first token after %.0f ms; starting %s", primary.name,
                             delay * 1000, backup.name)  # fmt: skip
                    backup_limits = self.limits(backup, plan, deadline)
                    pending.add(asyncio.create_task(self._attempt(backup, backup_limits, once, True, abandon)))
                else:
                    self.control.release(backup.provider, backup.name)
            hedged = len(pending) - 1
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                won = [t for t in done if t.exception() is None]
                for loser in won[1:]:  # both got a first token in the same instant: keep one, close the other
                    a = loser.result()
                    self.control.record(a.target.provider, a.target.name, a.started_at, None, ttft_ms=a.first_ms)
                    if discard is not None:
                        await discard(a.result)
                    if abandon is not None:
                        abandon(a.target, None)
                if won:
                    return won[0].result(), hedged
                errors.update((t, t.exception()) for t in done)  # type: ignore[misc]
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        raise errors.get(first) or next(iter(errors.values()))
