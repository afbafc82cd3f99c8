"""The providers status document (`GET /v1/gateway/providers`): shared view merged with one replica's own."""

from __future__ import annotations

import time
from typing import Any

from gateway.config import GatewayConfig
from gateway.control.replica import ReplicaControl

_STRICTNESS = {"closed": 0, "half_open": 1, "open": 2}


def _ms(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


def provider_status(config: GatewayConfig, control: ReplicaControl) -> dict[str, Any]:
    snap, now = control.snapshot, time.time()
    providers: dict[str, Any] = {}
    for name, p in config.providers.items():
        adapters = [f"{name}@{r.name}" for r in p.regions] or [name]
        for adapter in adapters:
            view = snap.providers.get(adapter)
            providers[adapter] = {
                "kind": p.kind, "region": adapter.partition("@")[2] or None,
                "rate_limit": dict(view.rate) if view is not None and view.rate else {"rpm": p.rpm, "tpm": p.tpm},
                "recent_errors": [
                    {"at": e.at, "model": e.model, "kind": e.kind, "message": e.message, "replica": e.replica}
                    for e in (view.recent_errors[-10:] if view is not None else ())
                ],
            }  # fmt: skip
    breakers: dict[tuple[str, str], dict[str, Any]] = {}
    for provider, view in snap.providers.items():
        for model, m in view.models.items():
            breakers[(provider, model)] = {
                "provider": provider, "model": model, "shared_state": m.state, "local_state": "closed",
                "consecutive_failures": m.consecutive_failures, "probe_owner": m.probe_owner,
                "retry_in_s": round(max(0.0, m.retry_at - now), 3) if m.state == "open" else 0.0,
                "requests": m.requests, "failures": m.failures, "ewma_latency_ms": _ms(m.ewma_latency_ms),
                "ewma_ttft_ms": _ms(m.ewma_ttft_ms), "p95_ttft_ms": _ms(m.p95_ttft_ms), "ttft_samples": m.ttft_samples,
            }  # fmt: skip
    for (provider, model), b in control.local_breakers():
        entry = breakers.setdefault((provider, model), {"provider": provider, "model": model, "shared_state": None,
                                                        "retry_in_s": 0.0})  # fmt: skip
        entry["local_state"] = b.state
        entry["local_consecutive_failures"] = b.failures
        entry["retry_in_s"] = round(max(entry["retry_in_s"], b.retry_in()), 3)
    for entry in breakers.values():
        states = [s for s in (entry.get("shared_state"), entry["local_state"]) if s is not None]
        entry["state"] = max(states, key=_STRICTNESS.__getitem__)
    return {
        "scope": "cluster" if snap.version else "replica",
        "replica": control.replica_id,
        "snapshot": {"version": snap.version, "stale": control.stale, "policy_version": snap.policy_version},
        "actor_calls": dict(control.actor_calls),
        "outcomes_dropped": control.dropped,
        "providers": providers,
        "breakers": sorted(breakers.values(), key=lambda b: (b["provider"], b["model"])),
    }
