"""Runs a route plan: one attempt at a time (or two, hedged), with breakers, rate leases, deadlines, timeouts,
retries and fallbacks. What an attempt does (complete, or open a stream up to its first token) is passed in."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from gateway.config import TimeoutOverrides
from gateway.control.replica import ReplicaControl
from gateway.providers import ProviderRegistry, Target
from gateway.routing.planner import RoutePlan
from gateway.routing.policy import Retry
from gateway.routing.retry import decide
from gateway.schema import ChatRequest, EmbeddingsRequest, ErrorKind, FailedAttempt, GatewayError, Usage

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
    """The attempt that succeeded: its result, where it ran, and when."""

    result: T
    target: Target
    started_at: float  # wall clock, for the outcome record
    t0: float  # perf_counter at the attempt's start
    first_ms: float  # time to the attempt's result (a stream's first token)
    limits: Limits


Once = Callable[[Target, Limits], Awaitable[T]]
Abandon = Callable[[Target, "Usage | None"], None]  # an attempt that may be billed without answering


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How one request runs its plan, fixed when the request is admitted.

    `tokens` is the rate-limit estimate of one attempt; `discard` closes a result that lost a hedge race;
    `abandon` hears of every attempt that may have been billed without answering.
    """

    stream: bool
    deadline: float
    tokens: Callable[[], int]
    latency_target_ms: float | None = None
    discard: Callable[[Any], Awaitable[None]] | None = None
    abandon: Abandon | None = None


def request_deadline(request: ChatRequest | EmbeddingsRequest, default_s: float | None) -> float:
    """The request's deadline on the perf_counter clock: the turn deadline, its own timeout, or the default."""
    now, meta = time.perf_counter(), request.metadata
    bounds = [meta.deadline - time.time()] if meta.deadline is not None else []
    if meta.timeout_ms is not None:
        bounds.append(meta.timeout_ms / 1000)
    if not bounds and default_s is not None:
        bounds.append(default_s)
    return now + min(bounds) if bounds else math.inf


def _key(target: Target) -> tuple[str, str]:
    return target.provider, target.name


@dataclass
class _Run:
    """The bookkeeping of one plan's run: attempts made, every failure in order, hedge backups already used."""

    options: RunOptions
    attempts: int = 0
    failures: list[GatewayError] = field(default_factory=list)
    skipped: GatewayError | None = None  # why a candidate was not tried (shown only when nothing was)
    used: set[tuple[str, str]] = field(default_factory=set)
    tried_any: bool = False

    def failed(self, error: GatewayError) -> None:
        self.failures.append(error)

    def final(self) -> GatewayError:
        """The deciding error (the last attempt's), carrying the whole attempt history."""
        if not self.failures:
            return self.skipped or GatewayError(ErrorKind.OVERLOADED, "no candidate could be tried")
        last = self.failures[-1]
        last.history = tuple(_history(self.failures))
        return last


def _history(failures: list[GatewayError]) -> list[FailedAttempt]:
    return [a for e in failures for a in (e.history or (e.attempt(),))]


class PlanRunner:
    """Runs plans for one replica: its adapters, and its control plane's breakers, leases and latency views.

    Holds no per-request state; each run's bookkeeping lives in a `_Run`.
    """

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

    async def run(self, plan: RoutePlan, once: Once[T], options: RunOptions) -> tuple[Attempt[T], int]:
        """The first attempt that succeeds, and how many attempts it took; else the deciding error, which carries
        every failed attempt. When every target is breaker-open, one trickle call goes to the least recently
        failed (the panic pass), so a short blip does not outlast the upstream's return by a whole cooldown."""
        run: _Run = _Run(options)
        targets = self._targets(plan, options)
        for i, target in enumerate(targets):
            if _key(target) in run.used:
                continue
            attempt = await self._on_target(run, plan, once, targets, i)
            if attempt is not None:
                return attempt, run.attempts
        if not run.tried_any and (panic := self._panic_target(targets)) is not None:
            log.info("every candidate is breaker-open; trickling one call to %s@%s", panic.name, panic.provider)
            attempt = await self._once_on(run, plan, once, panic)
            if attempt is not None:
                return attempt, run.attempts
        raise run.final()

    def _targets(self, plan: RoutePlan, options: RunOptions) -> list[Target]:
        """Every candidate on every region that serves it, in order; slow ones last under a latency target."""
        targets = [t for c in plan.candidates for t in self._registry.targets(c.model, plan.kind)]
        return self._by_latency_target(targets, options.latency_target_ms, options.stream)

    async def _on_target(self, run: _Run, plan: RoutePlan, once: Once[T], targets: list[Target],
                         i: int) -> Attempt[T] | None:  # fmt: skip
        """Attempts on one target, retried as the rules say; None when the run moves on to the next target."""
        rules = self.control.policy.retry if self.control.policy is not None else Retry()
        target, opts, tries = targets[i], run.options, 0
        while True:
            if opts.deadline - time.perf_counter() <= 0:
                raise run.final() if run.failures else GatewayError(
                    ErrorKind.TIMEOUT, "the request's deadline passed before an answer", retryable=False,
                    fallbackable=False)  # fmt: skip
            if not await self._admitted(run, target):
                return None
            run.tried_any, run.attempts, tries = True, run.attempts + 1, tries + 1
            try:
                return await self._hedged_or_single(run, plan, once, targets, i)
            except GatewayError as exc:
                run.failed(exc)
                decision = decide(exc, tries, run.attempts, rules)
                log.info("attempt %d on %s failed (%s: %s): %s", run.attempts, target.name, exc.kind.value, exc.message,
                         decision.why)  # fmt: skip
                if decision.action == "retry":
                    await asyncio.sleep(min(decision.delay_s, max(0.0, opts.deadline - time.perf_counter())))
                    continue
                if decision.action == "stop":
                    raise run.final() from None
                return None

    async def _once_on(self, run: _Run, plan: RoutePlan, once: Once[T], target: Target) -> Attempt[T] | None:
        """One attempt on `target` past its breaker (the panic pass), if its rate lease allows it."""
        if (refused := await self._lease(target, run.options.tokens)) is not None:
            self.control.release(target.provider, target.name)
            run.failed(refused)
            return None
        run.attempts += 1
        try:
            return await self._attempt(target, self.limits(target, plan, run.options.deadline), once, run.options)
        except GatewayError as exc:
            run.failed(exc)
            return None

    async def _admitted(self, run: _Run, target: Target) -> bool:
        """The breaker, the deadline estimate and the rate lease let an attempt on `target` start now."""
        why = self._blocked(target, run.options.stream, run.options.deadline)
        if why is not None:
            log.info("skipping %s: %s", target.name, why)
            wait = self.control.retry_in(target.provider, target.name) or None
            run.skipped = run.skipped or GatewayError(ErrorKind.OVERLOADED, f"`{target.name}` was skipped: {why}",
                                                      provider=target.provider, model=target.name,
                                                      retry_after=wait)  # fmt: skip
            return False
        refused = await self._lease(target, run.options.tokens)
        if refused is not None:
            self.control.release(target.provider, target.name)
            run.failed(refused)
            run.tried_any = True  # a spent limit is not an open breaker: no panic pass for it
            return False
        return True

    async def _hedged_or_single(self, run: _Run, plan: RoutePlan, once: Once[T], targets: list[Target],
                                i: int) -> Attempt[T]:  # fmt: skip
        target, opts = targets[i], run.options
        delay = self._hedge_delay(plan, target, opts.stream)
        backup = next((t for t in targets[i + 1 :] if _key(t) not in run.used and t != target), None) if delay else None
        if backup is None or delay is None:
            return await self._attempt(target, self.limits(target, plan, opts.deadline), once, opts)
        attempt, hedged = await self._race(target, backup, delay, plan, once, opts)
        run.attempts += hedged
        if hedged:
            run.used.add(_key(backup))
        return attempt

    def _panic_target(self, targets: list[Target]) -> Target | None:
        granted = self.control.panic_pass([_key(t) for t in targets])
        return next((t for t in targets if _key(t) == granted), None) if granted is not None else None

    async def _attempt(self, target: Target, limits: Limits, once: Once[T], opts: RunOptions) -> Attempt[T]:
        """One call; its failure is recorded here, a stream's success by the caller when it ends. `abandon` hears
        of every attempt that may have been billed without answering: the provider's usage, or None when the
        gateway walked away (a timeout, a lost hedge, a client that left) and only the prompt can be assumed."""
        wall, t0, stream, abandon = time.time(), time.perf_counter(), opts.stream, opts.abandon
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

    async def _lease(self, target: Target, tokens: Callable[[], int]) -> GatewayError | None:
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

    async def _race(self, primary: Target, backup: Target, delay: float, plan: RoutePlan, once: Once[T],
                    opts: RunOptions) -> tuple[Attempt[T], int]:  # fmt: skip
        """Hedge: if `primary` has no first token after `delay`, start `backup` too; the first to succeed wins and
        the other is cancelled (its stream closed). Returns the winner and 1 if the backup was started."""
        deadline = opts.deadline
        first = asyncio.create_task(self._attempt(primary, self.limits(primary, plan, deadline), once, opts))
        pending: set[asyncio.Task[Attempt[T]]] = {first}
        errors: dict[asyncio.Task[Attempt[T]], BaseException] = {}
        try:  # whatever happens here (the caller cancelled, too), no attempt outlives it unanswered
            done, _ = await asyncio.wait(pending, timeout=delay)
            if not done and self._blocked(backup, True, deadline) is None:
                if await self._lease(backup, opts.tokens) is None:
                    log.info("hedging: %s has no first token after %.0f ms; starting %s", primary.name,
                             delay * 1000, backup.name)  # fmt: skip
                    backup_limits = self.limits(backup, plan, deadline)
                    pending.add(asyncio.create_task(self._attempt(backup, backup_limits, once, opts)))
                else:
                    self.control.release(backup.provider, backup.name)
            hedged = len(pending) - 1
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                won = [t for t in done if t.exception() is None]
                for loser in won[1:]:  # both got a first token in the same instant: keep one, close the other
                    await self._close_loser(loser.result(), opts)
                if won:
                    return won[0].result(), hedged
                errors.update((t, t.exception()) for t in done)  # type: ignore[misc]
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        raise errors.get(first) or next(iter(errors.values()))

    async def _close_loser(self, a: Attempt[T], opts: RunOptions) -> None:
        self.control.record(a.target.provider, a.target.name, a.started_at, None, ttft_ms=a.first_ms)
        if opts.discard is not None:
            await opts.discard(a.result)
        if opts.abandon is not None:
            opts.abandon(a.target, None)
