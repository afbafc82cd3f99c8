"""Circuit breakers per (provider, model): closed → open on consecutive failures → half-open probes → closed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from gateway.schema import GatewayError
from gateway.schema.errors import HEALTH_FAILURES  # the `health` column of the one error table

FIRST_COOLDOWN_S = 1.0  # a first opening is short (a blip); each consecutive one doubles it, up to `cooldown_s`


def cooldown_after(openings: int, cooldown_s: float) -> float:
    """The cooldown of the `openings`-th consecutive opening: 1 s, 2 s, 4 s, ... at most `cooldown_s`."""
    return min(cooldown_s, FIRST_COOLDOWN_S * 2 ** max(0, openings - 1))


@dataclass
class Breaker:
    """One model on one provider. Open after `threshold` consecutive failures; after a cooldown, let `probes`
    calls through (half-open); a probe's success closes it, a failure re-opens it. The cooldown starts short and
    doubles with each consecutive opening, up to `cooldown_s`, so a blip costs a second and an outage a trickle."""

    threshold: int = 5
    cooldown_s: float = 30.0
    probes: int = 1
    clock: Callable[[], float] = time.monotonic
    state: Literal["closed", "open", "half_open"] = "closed"
    failures: int = 0
    opened_at: float = 0.0
    in_flight: int = field(default=0)
    openings: int = 0  # consecutive openings since it last closed

    @property
    def cooldown(self) -> float:
        return cooldown_after(self.openings, self.cooldown_s)

    def allow(self) -> bool:
        if self.state == "open":
            if self.clock() - self.opened_at < self.cooldown:
                return False
            self.state, self.in_flight = "half_open", 0
        if self.state == "half_open":
            if self.in_flight >= self.probes:
                return False
            self.in_flight += 1
        return True

    def retry_in(self) -> float:
        return max(0.0, self.cooldown - (self.clock() - self.opened_at)) if self.state == "open" else 0.0

    def release(self) -> None:
        """A permitted call that was never made or was cancelled: its half-open probe slot is free again."""
        if self.state == "half_open" and self.in_flight > 0:
            self.in_flight -= 1

    def success(self) -> None:
        self.state, self.failures, self.in_flight, self.openings = "closed", 0, 0, 0

    def failure(self) -> None:
        self.failures += 1
        if self.state == "half_open" or (self.state == "closed" and self.failures >= self.threshold):
            self.state, self.opened_at, self.in_flight = "open", self.clock(), 0
            self.openings += 1


class BreakerBoard:
    """The breakers one replica keeps (its own traffic only; the provider actors aggregate across replicas)."""

    def __init__(self, threshold: int = 5, cooldown_s: float = 30.0, probes: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._make = lambda: Breaker(threshold, cooldown_s, probes, clock)
        self._breakers: dict[tuple[str, str], Breaker] = {}

    def get(self, provider: str, model: str) -> Breaker:
        key = (provider, model)
        if key not in self._breakers:
            self._breakers[key] = self._make()
        return self._breakers[key]

    def record(self, provider: str, model: str, error: GatewayError | None) -> None:
        breaker = self.get(provider, model)
        if error is not None and error.kind in HEALTH_FAILURES:
            breaker.failure()
        else:  # it answered (even a refusal or a bad-request error): healthy, and a half-open probe is done
            breaker.success()

    def items(self) -> list[tuple[tuple[str, str], Breaker]]:
        return list(self._breakers.items())

    def states(self) -> dict[str, str]:
        return {f"{p}/{m}": b.state for (p, m), b in self._breakers.items()}
