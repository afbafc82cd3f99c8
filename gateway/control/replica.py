"""A replica's local side of the control plane: the cached snapshot, local breakers, rate leases, outcome outbox.

Everything here is read or written on the request path without leaving the process; a background task (the
Ray shell in `actors/`) drains the outbox to the provider actors, tops up leases and installs new snapshots.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from gateway.control.ratelimit import Grant, Held, RateLease
from gateway.control.snapshot import ModelView, Outcome, RoutingSnapshot
from gateway.routing.breaker import Breaker, BreakerBoard
from gateway.routing.policy import Breakers, RoutingPolicy
from gateway.schema import GatewayError

Refiller = Callable[[str, int, int, Held], Awaitable[Grant | None]]
OUTBOX_LIMIT = 10_000
PANIC_INTERVAL_S = 0.25  # at most one panic-pass call per target per replica this often (4/s): a trickle


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A provider's configured limits (None: unlimited)."""

    rpm: int | None = None
    tpm: int | None = None


class ReplicaControl:
    """The state one replica consults per request. Without a control plane (tests, notebooks) it is simply
    local: its snapshot never changes and its breakers see only this replica's traffic."""

    def __init__(
        self,
        replica_id: str,
        policy: RoutingPolicy | None,
        canonical: Mapping[str, str] | None = None,
        limits: Mapping[str, RateLimit] | None = None,
        *,
        stale_after_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.replica_id = replica_id
        self._canonical = dict(canonical or {})
        self._clock = clock
        self._stale_after_s = stale_after_s
        self.snapshot = RoutingSnapshot(0, policy, 0)
        self._fresh_at = clock()
        self.board = self._board(policy.breakers if policy else Breakers())
        self._probing: set[tuple[str, str]] = set()
        self._panicking: set[tuple[str, str]] = set()  # targets with a panic-pass call in flight from here
        self._panicked_at: dict[tuple[str, str], float] = {}  # when each target last got one
        self._outbox: list[Outcome] = []
        self.dropped = 0
        self._leases = {
            self.canonical(p): RateLease(max(1, (lim.rpm or 10**9) // 20), max(1, (lim.tpm or 10**12) // 20), clock)
            for p, lim in (limits or {}).items() if lim.rpm is not None or lim.tpm is not None
        }  # fmt: skip
        self.refiller: Refiller | None = None
        # actor calls made: by the background sync, and on a request's path (only when a rate lease ran out)
        self.actor_calls = {"background": 0, "request_path": 0}

    @staticmethod
    def _board(b: Breakers) -> BreakerBoard:
        return BreakerBoard(b.failure_threshold, b.cooldown_s, b.half_open_probes)

    def canonical(self, provider: str) -> str:
        return self._canonical.get(provider, provider)

    @property
    def policy(self) -> RoutingPolicy | None:
        return self.snapshot.policy

    def install(self, snapshot: RoutingSnapshot) -> None:
        """A fresher snapshot from the Router (an older or equal version only refreshes the staleness clock)."""
        self._fresh_at = self._clock()
        if snapshot.version <= self.snapshot.version:
            return
        old, previous = self.snapshot.policy, self.snapshot
        self.snapshot = snapshot
        if snapshot.policy is not None and (old is None or old.breakers != snapshot.policy.breakers):
            self.board = self._board(snapshot.policy.breakers)
        for provider, view in snapshot.providers.items():  # recovered everywhere (a probe succeeded): close here too
            for model, m in view.models.items():
                before = previous.model(provider, model)
                if m.state == "closed" and before is not None and before.state != "closed":
                    self.board.get(provider, model).success()

    @property
    def stale(self) -> bool:
        return self._clock() - self._fresh_at > self._stale_after_s

    # --- breakers -------------------------------------------------------------------------------------------
    def shared(self, provider: str, model: str) -> ModelView | None:
        return self.snapshot.model(self.canonical(provider), model)

    def blocked(self, provider: str, model: str) -> str | None:
        """None when `model` may be called now, else why not. The shared (all-replica) breaker is obeyed while the
        snapshot is fresh; the local one trips at once on this replica's own consecutive failures."""
        key = (self.canonical(provider), model)
        view = None if self.stale else self.snapshot.model(*key)
        if view is not None and view.state == "open":  # past its cooldown it waits for the probe owner's probe
            return "its circuit breaker is open (shared across replicas)"
        if view is not None and view.state == "half_open":
            if view.probe_owner != self.replica_id:
                return "its circuit breaker is half-open and another replica is probing"
            if key in self._probing:
                return "its circuit breaker is half-open and this replica's probe is in flight"
            self._probing.add(key)
            return None
        if not self.board.get(*key).allow():
            return "its circuit breaker is open (this replica)"
        return None

    def panic_pass(self, targets: list[tuple[str, str]]) -> tuple[str, str] | None:
        """Every target of a plan is breaker-open: let one call through to the one that opened least recently
        (Envoy's panic threshold), at most one in flight per target from this replica and one per
        PANIC_INTERVAL_S; None otherwise. Its outcome is recorded like any attempt's, so a success closes the
        breaker at once."""
        if not targets:
            return None
        key = min(targets, key=lambda t: self._opened_at(*t))
        canonical, now = (self.canonical(key[0]), key[1]), self._clock()
        if canonical in self._panicking or now - self._panicked_at.get(canonical, -PANIC_INTERVAL_S) < PANIC_INTERVAL_S:
            return None
        self._panicking.add(canonical)
        self._panicked_at[canonical] = now
        return key

    def _opened_at(self, provider: str, model: str) -> float:
        view = self.shared(provider, model)
        local = self.board.get(self.canonical(provider), model).opened_at
        return max(local, view.retry_at if view is not None and view.state == "open" else 0.0)

    def retry_in(self, provider: str, model: str) -> float:
        view = self.shared(provider, model)
        shared = max(0.0, view.retry_at - self._clock()) if view is not None and view.state == "open" else 0.0
        return max(shared, self.board.get(self.canonical(provider), model).retry_in())

    def record(self, provider: str, model: str, started_at: float, error: GatewayError | None = None,
               latency_ms: float | None = None, ttft_ms: float | None = None) -> None:  # fmt: skip
        """One finished attempt: the local breaker learns at once, the provider actor with the next batch."""
        key = (self.canonical(provider), model)
        self._probing.discard(key)
        self._panicking.discard(key)
        self.board.record(key[0], model, error)
        if len(self._outbox) >= OUTBOX_LIMIT:
            del self._outbox[: OUTBOX_LIMIT // 10]
            self.dropped += OUTBOX_LIMIT // 10
        kind = error.kind.value if error is not None else None
        message = error.message if error is not None else ""
        self._outbox.append(Outcome(key[0], model, self.replica_id, started_at, kind, message, latency_ms, ttft_ms))

    def release(self, provider: str, model: str) -> None:
        """An attempt ended without a verdict (cancelled, or never sent): free its half-open probe slot."""
        key = (self.canonical(provider), model)
        self._probing.discard(key)
        self._panicking.discard(key)
        self.board.get(*key).release()

    def censored(self, provider: str, model: str, started_at: float, ttft_ms: float) -> None:
        """An attempt cancelled before its first token (a lost hedge, a client gone): only a TTFT lower bound."""
        key = self.canonical(provider)
        self._outbox.append(Outcome(key, model, self.replica_id, started_at, None, "", None, ttft_ms, censored=True))

    def drain(self) -> dict[str, list[Outcome]]:
        batch, self._outbox = self._outbox, []
        by_provider: dict[str, list[Outcome]] = {}
        for outcome in batch:
            by_provider.setdefault(outcome.provider, []).append(outcome)
        return by_provider

    def local_breakers(self) -> list[tuple[tuple[str, str], Breaker]]:
        return self.board.items()

    # --- rate leases ----------------------------------------------------------------------------------------
    def limited(self, provider: str) -> bool:
        return self.canonical(provider) in self._leases

    def take(self, provider: str, tokens: int) -> bool:
        """Spend from the provider's lease; True also when the provider has no configured limit."""
        lease = self._leases.get(self.canonical(provider))
        return lease is None or lease.take(tokens)

    async def refill_and_take(self, provider: str, tokens: int) -> bool:
        """The one synchronous actor call a request may make: its provider's lease ran out."""
        key = self.canonical(provider)
        lease = self._leases[key]
        if self.refiller is None or lease.refused:
            return False
        self.actor_calls["request_path"] += 1
        grant = await self.refiller(key, *lease.want(tokens), lease.held())
        if grant is None:  # the provider actor is unreachable: one bounded chunk a window, then refused
            return lease.fallback(tokens)
        lease.install(grant)
        return lease.take(tokens)

    def low_leases(self) -> list[tuple[str, int, int, Held]]:
        return [(p, *lease.want(), lease.held()) for p, lease in self._leases.items() if lease.low()]

    def install_grant(self, provider: str, grant: Grant) -> None:
        self._leases[provider].install(grant)

    def lease_window_end(self, provider: str) -> float:
        lease = self._leases.get(self.canonical(provider))
        return max(0.0, lease.expires_at - self._clock()) if lease is not None else 0.0
