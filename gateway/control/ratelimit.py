"""Provider rate limits (requests and tokens per minute, as token buckets) leased to replicas: the provider actor
grants, a replica spends locally."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.limits.bucket import MILLI, BucketSpec, Level, full, refilled, wait_ms

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Grant:
    """A slice of one window's limit handed to one replica, spendable until `expires_at`."""

    window: int  # the minute this grant belongs to (wall clock // 60)
    requests: int
    tokens: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class Held:
    """What one replica was granted in one window so far (reported with each ask)."""

    window: int
    requests: int
    tokens: int


class RateLimiter:
    """The provider actor's side: a token bucket per limit (a minute's worth, refilled continuously, so no 2x burst
    at a minute boundary); grants shrink as a bucket empties, so the replicas together never exceed it (a lease's
    leftovers are dropped at its minute's end, never over-granted)."""

    def __init__(self, rpm: int | None, tpm: int | None, clock: Callable[[], float] = time.time) -> None:
        self.rpm, self.tpm = rpm, tpm
        self._clock = clock
        now = self._ms()
        self._specs = tuple(BucketSpec(n * MILLI, n * MILLI) if n is not None else None for n in (rpm, tpm))
        self._levels = [full(spec, now) if spec is not None else None for spec in self._specs]
        self._counted: dict[str, int] = {}  # replica -> the minute of its last grant (what it held is known)
        self._asked: dict[str, float] = {}  # replica -> its last grant (a holder for a minute)

    def _ms(self) -> int:
        return int(self._clock() * 1000)

    def _left(self, i: int, now: int) -> int | None:
        spec, level = self._specs[i], self._levels[i]
        if spec is None or level is None:
            return None
        self._levels[i] = level = refilled(spec, level, now)
        return level.milli // MILLI

    def _spend(self, i: int, amount: int) -> None:
        level = self._levels[i]
        if level is not None:
            self._levels[i] = Level(level.milli - amount * MILLI, level.at_ms)

    def _holders(self, replica: str) -> int:
        now = self._clock()
        self._asked[replica] = now
        for gone in [r for r, at in self._asked.items() if now - at > WINDOW_S]:
            del self._asked[gone]
        return len(self._asked)

    def grant(self, replica: str, want_requests: int, want_tokens: int, held: Held | None = None) -> Grant:
        """At most half of what is left, split between the replicas holding leases; at least what one request
        needs while that fits. `held`: what the replica was granted this minute, which a limiter that has not
        granted to it this minute (it restarted) counts as spent, so a restart forgets nothing."""
        now, window = self._ms(), int(self._clock() // WINDOW_S)
        if self._counted.get(replica) != window and held is not None and held.window == window:
            self._spend(0, held.requests)
            self._spend(1, held.tokens)
        self._counted[replica] = window
        share = 2 * self._holders(replica)
        left_r, left_t = self._left(0, now), self._left(1, now)
        requests = want_requests
        if left_r is not None:
            requests = min(want_requests, left_r, max(1, left_r // share)) if left_r > 0 else 0
        tokens = want_tokens if requests else 0
        if left_t is not None and requests:
            tokens = min(want_tokens, left_t)
            if tokens <= 0:
                requests, tokens = 0, 0
        if not requests:  # refused until one request and one token have refilled
            return Grant(window, 0, 0, self._clock() + max(0.05, self._wait(now) / 1000))
        self._spend(0, requests)
        self._spend(1, tokens)
        return Grant(window, requests, tokens, (window + 1) * WINDOW_S)

    def _wait(self, now: int) -> int:
        waits = [wait_ms(spec, refilled(spec, level, now), MILLI) or 0
                 for spec, level in zip(self._specs, self._levels, strict=True) if spec and level]  # fmt: skip
        return max(waits, default=0)

    def view(self) -> dict[str, int | None]:
        """The limits, and what of each bucket is in use (granted and not yet refilled)."""
        now = self._ms()
        used = [None if (left := self._left(i, now)) is None or spec is None else spec.capacity // MILLI - left
                for i, spec in enumerate(self._specs)]  # fmt: skip
        return {"rpm": self.rpm, "tpm": self.tpm, "requests_granted": used[0], "tokens_granted": used[1]}


class RateLease:
    """A replica's side for one provider: spend locally, ask for more when it runs low (in the background) or out."""

    def __init__(self, chunk_requests: int, chunk_tokens: int, clock: Callable[[], float] = time.time) -> None:
        self.chunk_requests, self.chunk_tokens = chunk_requests, chunk_tokens
        self._clock = clock
        self.requests = 0
        self.tokens = 0
        self.expires_at = 0.0
        self.refused_until = 0.0  # the actor said no: no further call until its window ends
        self._granted = (0, 0)
        self._held = Held(-1, 0, 0)  # granted this window, by the actor or as a fallback
        self._fallback_window = -1  # the window whose one fallback chunk was already taken

    def take(self, tokens: int) -> bool:
        """Spend one request and `tokens`; False when the lease cannot cover it (then refill, or refuse)."""
        if self._clock() >= self.expires_at or self.requests < 1 or self.tokens < tokens:
            return False
        self.requests -= 1
        self.tokens -= tokens
        return True

    def low(self) -> bool:
        """Worth topping up in the background: expired, or under half of the last grant."""
        r, t = self._granted
        if self.refused:
            return False
        return self._clock() >= self.expires_at or self.requests * 2 < r or self.tokens * 2 < t

    def want(self, tokens: int = 0) -> tuple[int, int]:
        return self.chunk_requests, max(self.chunk_tokens, tokens)

    def held(self) -> Held:
        window = int(self._clock() // WINDOW_S)
        return self._held if self._held.window == window else Held(window, 0, 0)

    def fallback(self, tokens: int) -> bool:
        """The actor cannot be reached: one chunk per window from here, never more (a replica's bound while the
        limiter is away is one chunk, a twentieth of the limit, a minute); then take from it."""
        window = int(self._clock() // WINDOW_S)
        if self._fallback_window == window:
            return False
        self._fallback_window = window
        self.install(Grant(window, self.chunk_requests, max(self.chunk_tokens, tokens), (window + 1) * WINDOW_S))
        return self.take(tokens)

    def install(self, grant: Grant) -> None:
        held = self.held()
        self._held = Held(grant.window, held.requests + grant.requests, held.tokens + grant.tokens)
        if self._clock() >= self.expires_at or grant.expires_at != self.expires_at:
            self.requests, self.tokens = 0, 0  # an old window's leftovers are gone
        self.requests += grant.requests
        self.tokens += grant.tokens
        self.expires_at = grant.expires_at
        self._granted = (grant.requests, grant.tokens)
        if grant.requests == 0:
            self.refused_until = grant.expires_at

    @property
    def refused(self) -> bool:
        return self._clock() < self.refused_until
