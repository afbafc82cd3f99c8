"""One provider's shared health (the state a provider actor holds): aggregated breakers, latency statistics, errors."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.control.ratelimit import RateLimiter
from gateway.control.snapshot import BreakerState, ErrorRecord, ModelView, Outcome, ProviderView
from gateway.routing.breaker import HEALTH_FAILURES, cooldown_after
from gateway.routing.policy import Breakers

_HEALTH_KINDS = frozenset(k.value for k in HEALTH_FAILURES)
EWMA_ALPHA = 0.2
TTFT_WINDOW = 256  # recent first-token times kept per model for the p95


@dataclass
class SharedBreaker:
    """A breaker fed by every replica's outcomes. Open after `threshold` consecutive health failures; after
    the cooldown it is half-open and exactly one replica (the probe owner) may probe; the owner rotates if it
    sends nothing for another cooldown. Outcomes of attempts started before the breaker opened are ignored."""

    settings: Breakers
    state: BreakerState = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probe_owner: str | None = None
    probe_since: float = 0.0
    openings: int = 0  # consecutive openings since it last closed: the cooldown doubles with each

    @property
    def cooldown(self) -> float:
        return cooldown_after(self.openings, self.settings.cooldown_s)

    def observe(self, outcome: Outcome) -> None:
        healthy = outcome.kind not in _HEALTH_KINDS
        if self.state == "closed":
            self.failures = 0 if healthy else self.failures + 1
            if self.failures >= self.settings.failure_threshold:
                self._open(outcome.started_at)
            return
        if outcome.started_at < self.opened_at:
            return  # began before the breaker opened: says nothing about the provider now
        if healthy:
            self.state, self.failures, self.probe_owner, self.openings = "closed", 0, None, 0
        elif self.state == "half_open":
            self._open(max(outcome.started_at, self.probe_since))  # the probe failed: a new cooldown

    def _open(self, at: float) -> None:
        self.state, self.opened_at, self.probe_owner = "open", at, None
        self.openings += 1

    def tick(self, now: float, replicas: list[str]) -> None:
        """Move open → half-open after the cooldown and give (or rotate) the probe to one replica."""
        cooldown = self.cooldown
        if self.state == "open" and now - self.opened_at >= cooldown:
            self.state, self.probe_since, self.probe_owner = "half_open", now, None
        if self.state == "half_open" and replicas and (self.probe_owner is None or now - self.probe_since >= cooldown):
            nxt = (replicas.index(self.probe_owner) + 1) if self.probe_owner in replicas else 0
            self.probe_owner, self.probe_since = replicas[nxt % len(replicas)], now

    def retry_at(self) -> float:
        return self.opened_at + self.cooldown if self.state == "open" else 0.0


@dataclass
class ModelStats:
    """One model's running statistics in a provider actor: counts, EWMAs and a window of first-token times."""

    requests: int = 0
    failures: int = 0
    ewma_latency_ms: float | None = None
    ewma_ttft_ms: float | None = None
    ttfts: deque[float] = field(default_factory=lambda: deque(maxlen=TTFT_WINDOW))

    def observe(self, outcome: Outcome) -> None:
        self.requests += 1
        if outcome.kind is not None:
            self.failures += 1
            return
        if outcome.latency_ms is not None:
            self.ewma_latency_ms = _ewma(self.ewma_latency_ms, outcome.latency_ms)
        if outcome.ttft_ms is not None:
            self.ewma_ttft_ms = _ewma(self.ewma_ttft_ms, outcome.ttft_ms)
            self.ttfts.append(outcome.ttft_ms)

    def p95_ttft(self) -> float | None:
        if not self.ttfts:
            return None
        ordered = sorted(self.ttfts)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else old + EWMA_ALPHA * (new - old)


class ProviderHealth:
    """Everything one provider actor knows; fed by outcome batches, read as a ProviderView."""

    def __init__(self, provider: str, breakers: Breakers, limiter: RateLimiter | None = None,
                 clock: Callable[[], float] = time.time, replica_ttl_s: float = 30.0) -> None:  # fmt: skip
        self.provider = provider
        self._settings = breakers
        self._clock = clock
        self._breakers: dict[str, SharedBreaker] = {}
        self._stats: dict[str, ModelStats] = {}
        self._errors: deque[ErrorRecord] = deque(maxlen=50)
        self._replicas: dict[str, float] = {}  # replica id -> last report time
        self._replica_ttl_s = replica_ttl_s
        self.limiter = limiter

    def configure(self, breakers: Breakers) -> None:
        """A reloaded policy's breaker settings apply to existing breakers too."""
        self._settings = breakers
        for b in self._breakers.values():
            b.settings = breakers

    def report(self, replica: str, outcomes: Iterable[Outcome]) -> None:
        now = self._clock()
        self._replicas[replica] = now
        for outcome in sorted(outcomes, key=lambda o: o.started_at):
            if outcome.censored:
                if outcome.ttft_ms is not None:
                    self._stats.setdefault(outcome.model, ModelStats()).ttfts.append(outcome.ttft_ms)
                continue
            self._breaker(outcome.model).observe(outcome)
            self._stats.setdefault(outcome.model, ModelStats()).observe(outcome)
            if outcome.kind is not None:
                self._errors.append(ErrorRecord(now, outcome.model, outcome.kind, outcome.message[:300], replica))
        self.tick()

    def seen(self, replica: str) -> None:
        self._replicas[replica] = self._clock()

    def _breaker(self, model: str) -> SharedBreaker:
        if model not in self._breakers:
            self._breakers[model] = SharedBreaker(self._settings)
        return self._breakers[model]

    def tick(self) -> None:
        now = self._clock()
        live = sorted(r for r, t in self._replicas.items() if now - t <= self._replica_ttl_s)
        for breaker in self._breakers.values():
            breaker.tick(now, live)

    def view(self) -> ProviderView:
        self.tick()
        models = {}
        for model in self._breakers.keys() | self._stats.keys():
            b, s = self._breakers.get(model), self._stats.get(model, ModelStats())
            models[model] = ModelView(
                state=b.state if b else "closed", consecutive_failures=b.failures if b else 0,
                retry_at=b.retry_at() if b else 0.0, probe_owner=b.probe_owner if b else None,
                requests=s.requests, failures=s.failures, ewma_latency_ms=s.ewma_latency_ms,
                ewma_ttft_ms=s.ewma_ttft_ms, p95_ttft_ms=s.p95_ttft(), ttft_samples=len(s.ttfts),
            )  # fmt: skip
        rate = self.limiter.view() if self.limiter is not None else {}
        return ProviderView(self.provider, models, tuple(self._errors), rate)
