"""What crosses the control plane: outcomes (replica → provider actor), routing snapshots (Router → replica)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.routing.policy import RoutingPolicy

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished attempt as a replica saw it. `kind` is the ErrorKind value of a failure, None for success."""

    provider: str
    model: str
    replica: str
    started_at: float  # wall clock (time.time()), comparable across processes
    kind: str | None = None
    message: str = ""
    latency_ms: float | None = None
    ttft_ms: float | None = None
    censored: bool = False  # cancelled before its first token: `ttft_ms` is a lower bound, and no verdict


@dataclass(frozen=True, slots=True)
class ModelView:
    """The aggregated view of one (provider, model): breaker state and latency statistics."""

    state: BreakerState = "closed"
    consecutive_failures: int = 0
    retry_at: float = 0.0  # wall clock when an open breaker goes half-open
    probe_owner: str | None = None  # the one replica allowed to probe a half-open breaker
    requests: int = 0
    failures: int = 0
    ewma_latency_ms: float | None = None
    ewma_ttft_ms: float | None = None
    p95_ttft_ms: float | None = None
    ttft_samples: int = 0


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One recent failure a provider actor keeps (the last 50 are published in its view)."""

    at: float
    model: str
    kind: str
    message: str
    replica: str


@dataclass(frozen=True, slots=True)
class ProviderView:
    """What one provider actor publishes."""

    provider: str
    models: Mapping[str, ModelView]
    recent_errors: tuple[ErrorRecord, ...] = ()
    rate: Mapping[str, int | None] = field(default_factory=dict)  # limits and this window's use


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    """A versioned routing table (never mutated once built): the policy plus every provider's view."""

    version: int
    policy: RoutingPolicy | None
    policy_version: int
    providers: Mapping[str, ProviderView] = field(default_factory=dict)
    policy_error: str | None = None  # why the last reload was rejected (the old policy stays)

    def model(self, provider: str, model: str) -> ModelView | None:
        view = self.providers.get(provider)
        return view.models.get(model) if view is not None else None
