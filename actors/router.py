"""RouterActor: a thin Ray shell over `gateway.control.router_state.RouterState` that gathers provider views."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import ray

from gateway.config import ModelEntry
from gateway.control.router_state import RouterState
from gateway.control.snapshot import RoutingSnapshot
from gateway.routing.policy import RoutingPolicy

log = logging.getLogger("gateway.router")


@ray.remote(num_cpus=0, max_restarts=-1)
class RouterActor:
    """Pull-based: a snapshot request older than `interval_s` first gathers every provider actor's view, so the
    actor needs no background loop and a restarted Router is whole again at its first call."""

    def __init__(self, policy: RoutingPolicy | None, policy_path: str | None, catalog: Mapping[str, ModelEntry],
                 providers: list[str], namespace: str, interval_s: float) -> None:  # fmt: skip
        self._init(policy, policy_path, catalog, providers, namespace, interval_s)

    def _init(self, policy, policy_path, catalog, providers, namespace, interval_s) -> None:  # type: ignore[no-untyped-def]
        self._state = RouterState(policy, policy_path, catalog, version=int(time.time() * 1e6))
        if policy_path:
            self._state.reload()  # the file is the source of truth: a restarted Router picks up later reloads
        self._providers, self._namespace, self._interval = list(providers), namespace, interval_s
        self._handles: dict[str, ray.actor.ActorHandle] = {}
        self._gathered = 0.0
        self._lock = asyncio.Lock()
        self._key = (policy, policy_path, dict(catalog), tuple(providers), interval_s)

    async def adopt(self, policy, policy_path, catalog, providers, namespace, interval_s) -> None:  # type: ignore[no-untyped-def]
        """Called by each replica at start: a redeploy with another configuration replaces the state."""
        if self._key != (policy, policy_path, dict(catalog), tuple(providers), interval_s):
            self._init(policy, policy_path, catalog, providers, namespace, interval_s)

    def _handle(self, provider: str) -> ray.actor.ActorHandle | None:
        if provider not in self._handles:
            try:
                self._handles[provider] = ray.get_actor(f"provider:{provider}", namespace=self._namespace)
            except ValueError:
                return None
        return self._handles[provider]

    async def _gather(self) -> None:
        names = [p for p in self._providers if self._handle(p) is not None]
        refs = [self._handles[p].view.remote() for p in names]
        views = await asyncio.gather(*(asyncio.wait_for(r, 2.0) for r in refs), return_exceptions=True)
        for name, view in zip(names, views, strict=True):
            if isinstance(view, BaseException):
                log.warning("provider actor %s did not answer: %r", name, view)
                self._handles.pop(name, None)
            else:
                self._state.absorb(view)
        self._state.reload_if_changed()

    async def snapshot(self, known_version: int = -1) -> RoutingSnapshot | None:
        """The current snapshot, or None when the caller already has this version."""
        async with self._lock:
            if time.monotonic() - self._gathered >= self._interval:
                self._gathered = time.monotonic()
                await self._gather()
        snap = self._state.snapshot()
        return None if snap.version == known_version else snap

    async def reload(self) -> tuple[bool, str]:
        return self._state.reload()

    async def status(self) -> dict[str, object]:
        return self._state.status()
