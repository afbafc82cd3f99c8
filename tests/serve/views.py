"""Reading `GET /v1/gateway/providers` from every replica (HAProxy picks one per request)."""

from __future__ import annotations

import time

import httpx

from tests.serve.conftest import REPLICAS
from tests.serve.keys import AUTH


def every_replica_view(url: str, until, timeout_s: float = 10.0) -> dict[str, dict]:
    """GET /v1/gateway/providers until every replica has answered with a view for which `until(view)` holds."""
    views: dict[str, dict] = {}
    stop = time.monotonic() + timeout_s
    while time.monotonic() < stop:
        view = httpx.get(f"{url}/v1/gateway/providers", headers=AUTH).json()
        if until(view):
            views[view["replica"]] = view
        if len(views) == REPLICAS:
            return views
    raise AssertionError(f"only {len(views)} of {REPLICAS} replicas reached the expected state in {timeout_s} s")


def breaker(view: dict, provider: str, model: str) -> dict:
    return next(b for b in view["breakers"] if (b["provider"], b["model"]) == (provider, model))


def shared_open(model: str):
    def check(view: dict) -> bool:
        return any(b["model"] == model and b["shared_state"] == "open" for b in view["breakers"])

    return check
