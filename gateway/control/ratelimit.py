"""Provider rate limits (requests and tokens per minute) as leases: the actor grants, a replica spends locally."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

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
    """The provider actor's side: per-minute windows; grants shrink as a window nears its limit, so the replicas
    together never exceed it (unspent leased capacity is lost at the window's end, never over-granted)."""

    def __init__(self, rpm: int | None, tpm: int | None, clock: Callable[[], float] = time.time) -> None:
        self.rpm, self.tpm = rpm, tpm
        self._clock = clock
        self._window = -1
        self._requests = 0
        self._tokens = 0
        self._holders: set[str] = set()

    def _roll(self) -> int:
        window = int(self._clock() // WINDOW_S)
        if window != self._window:
            self._window, self._requests, self._tokens, self._holders = window, 0, 0, set()
        return window

    def grant(self, replica: str, want_requests: int, want_tokens: int, held: Held | None = None) -> Grant:
        """At most half of what is left, split between the replicas holding leases this minute; at least what one
        request needs while that fits. `held`: what the replica was granted this minute before, which a limiter
        that does not know the replica (it restarted mid-minute) counts as used, so a restart forgets nothing."""
        window = self._roll()
        if replica not in self._holders and held is not None and held.window == window:
            self._requests += held.requests
            self._tokens += held.tokens
        self._holders.add(replica)
        share = 2 * len(self._holders)
        requests = want_requests
        if self.rpm is not None:
            left = self.rpm - self._requests
            requests = min(want_requests, left, max(1, left // share)) if left > 0 else 0
        tokens = want_tokens if requests else 0
        if self.tpm is not None and requests:
            left = self.tpm - self._tokens
            tokens = min(want_tokens, left)
            if tokens <= 0:
                requests, tokens = 0, 0
        self._requests += requests
        self._tokens += tokens
        return Grant(window, requests, tokens, (window + 1) * WINDOW_S)

    def view(self) -> dict[str, int | None]:
        self._roll()
        return {"rpm": self.rpm, "tpm": self.tpm, "requests_granted": self._requests, "tokens_granted": self._tokens}


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
