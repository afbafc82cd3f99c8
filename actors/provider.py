"""ProviderActor: one per provider (and Bedrock region), a thin Ray shell over `gateway.control.health`."""

from __future__ import annotations

import ray

from gateway.control.health import ProviderHealth
from gateway.control.ratelimit import Grant, Held, RateLimiter
from gateway.control.snapshot import Outcome, ProviderView
from gateway.routing.policy import Breakers


@ray.remote(num_cpus=0, max_restarts=-1)
class ProviderActor:
    """One provider's shared health (breakers, statistics) and rate limiter; restarted empty by Ray, then
    refilled by the replicas' reports and their `held` leases."""

    def __init__(self, provider: str, breakers: Breakers, rpm: int | None, tpm: int | None) -> None:
        limiter = RateLimiter(rpm, tpm) if rpm is not None or tpm is not None else None
        self._health = ProviderHealth(provider, breakers, limiter)

    async def report(self, replica: str, outcomes: list[Outcome]) -> None:
        self._health.report(replica, outcomes)

    async def view(self) -> ProviderView:
        return self._health.view()

    async def grant(self, replica: str, requests: int, tokens: int, held: Held | None = None) -> Grant | None:
        self._health.seen(replica)
        limiter = self._health.limiter
        return limiter.grant(replica, requests, tokens, held) if limiter is not None else None

    async def configure(self, breakers: Breakers, rpm: int | None, tpm: int | None) -> None:
        """A redeploy with other settings adopts them; breaker state and statistics are kept."""
        self._health.configure(breakers)
        if rpm is None and tpm is None:
            self._health.limiter = None
        elif self._health.limiter is None or (self._health.limiter.rpm, self._health.limiter.tpm) != (rpm, tpm):
            self._health.limiter = RateLimiter(rpm, tpm)
