"""A replica's link to the control plane: finds or creates the named actors and runs the background sync
(outcome batches out, lease top-ups, snapshots in). Nothing here runs per request, except `refill` when a
rate lease has run out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import ray
from ray.exceptions import RayError

from actors.ledger import BudgetLedgerActor
from actors.provider import ProviderActor
from actors.router import RouterActor
from gateway.budgets.gate import BudgetGate
from gateway.budgets.ledger import Lease
from gateway.budgets.policy import Account
from gateway.config import GatewayConfig
from gateway.control.ratelimit import Grant, Held
from gateway.control.replica import ReplicaControl
from gateway.routing.policy import Breakers, RoutingPolicy

log = logging.getLogger("gateway.control")
CALL_TIMEOUT_S = 2.0
ALIVE_EVERY = 10  # ticks


def _named(cls, name: str, namespace: str, *args):  # type: ignore[no-untyped-def]
    return cls.options(name=name, namespace=namespace, lifetime="detached", get_if_exists=True).remote(*args)


class ControlLink:
    def __init__(self, config: GatewayConfig, policy: RoutingPolicy | None,
                 providers: Mapping[str, tuple[int | None, int | None]], control: ReplicaControl,
                 gate: BudgetGate | None = None) -> None:  # fmt: skip
        self._cfg = config.control
        self._catalog = dict(config.models)
        self._policy, self._path = policy, config.routing_policy
        self._limits = dict(providers)
        self._control = control
        self._router: ray.actor.ActorHandle | None = None
        self._providers: dict[str, ray.actor.ActorHandle] = {}
        self._task: asyncio.Task[None] | None = None
        self._warned_at = 0.0
        self._ticks = 0
        control.refiller = self.refill
        self._gate, self._budgets = gate, config.budgets
        self._ledger: ray.actor.ActorHandle | None = None
        if gate is not None:
            gate.granter = self.budget_grant

    # --- the actors -----------------------------------------------------------------------------------------
    def _router_args(self) -> tuple:  # type: ignore[type-arg]
        return (self._policy, self._path, self._catalog, list(self._limits), self._cfg.namespace, self._cfg.interval_s)

    async def _get_router(self) -> ray.actor.ActorHandle:
        if self._router is None:
            self._router = _named(RouterActor, "router", self._cfg.namespace, *self._router_args())
            await asyncio.wait_for(self._router.adopt.remote(*self._router_args()), CALL_TIMEOUT_S * 5)
        return self._router

    async def _get_provider(self, name: str) -> ray.actor.ActorHandle:
        if name not in self._providers:
            policy = self._control.policy  # the policy in force (a reload may have changed the breakers)
            breakers = policy.breakers if policy is not None else Breakers()
            rpm, tpm = self._limits[name]
            handle = _named(ProviderActor, f"provider:{name}", self._cfg.namespace, name, breakers, rpm, tpm)
            await asyncio.wait_for(handle.configure.remote(breakers, rpm, tpm), CALL_TIMEOUT_S * 5)
            self._providers[name] = handle
        return self._providers[name]

    def _get_ledger(self) -> ray.actor.ActorHandle:
        if self._ledger is None:
            self._ledger = _named(BudgetLedgerActor, "budget_ledger", self._cfg.namespace, self._budgets)
        return self._ledger

    async def budget_grant(self, account: Account, want: tuple[int, int], need: tuple[int, int]) -> Lease | None:
        """On a request's path, only when a budget balance cannot cover the call; None: the ledger is down."""
        self._control.actor_calls["request_path"] += 1
        try:
            ref = self._get_ledger().grant.remote(self._control.replica_id, account, want, need)
            return await asyncio.wait_for(ref, CALL_TIMEOUT_S)
        except (RayError, TimeoutError) as exc:
            self._ledger = None
            self._trouble("a budget lease", exc)
            return None

    async def _to_ledger(self, what: str, method: str, *args: Any) -> tuple[bool, Any]:
        """A background call to the ledger: (True, its answer), or (False, None) with the trouble logged and the
        handle dropped (it is looked up again next time, after a restart)."""
        try:
            self._control.actor_calls["background"] += 1
            ref = getattr(self._get_ledger(), method).remote(self._control.replica_id, *args)
            return True, await asyncio.wait_for(ref, CALL_TIMEOUT_S)
        except (RayError, TimeoutError) as exc:
            self._ledger = None
            self._trouble(what, exc)
            return False, None

    async def _flush_charges(self) -> None:
        """Settled spend leaves the outbox only once the ledger has acknowledged it."""
        charges = self._gate.take_outbox() if self._gate is not None else []
        if charges and (await self._to_ledger("settling spend", "settle", charges))[0]:
            self._gate.acknowledged(charges)  # type: ignore[union-attr]

    async def _top_up_budgets(self) -> None:
        """Balances running low are refilled here, off the request path (as rate leases are)."""
        for account, want in self._gate.wants() if self._gate is not None else ():
            ok, lease = await self._to_ledger("a budget lease", "grant", account, want, (0, 0))
            if not ok:
                return
            self._gate.install(account, lease)  # type: ignore[union-attr]

    async def _release_idle(self) -> None:
        """Budget balances of accounts this replica stopped using (finished turns, past windows) go back."""
        if self._gate is None or self._ticks % ALIVE_EVERY:
            return
        releases = self._gate.idle()
        if releases and (await self._to_ledger("releasing idle budget balances", "release", releases))[0]:
            self._gate.released(releases)

    async def start_ledger(self) -> None:
        """At start-up, with budgets on: create (or find) the ledger now, so the first budgeted request does not
        wait for an actor to start. A failure is only logged (requests then fail closed until it is up)."""
        if self._gate is None:
            return
        try:
            await asyncio.wait_for(self._get_ledger().ready.remote(), CALL_TIMEOUT_S * 15)
        except (RayError, TimeoutError) as exc:
            self._ledger = None
            self._trouble("starting the budget ledger", exc)

    async def budget_status(self, account: str) -> dict[str, int | None]:
        await self._flush_charges()
        return await asyncio.wait_for(self._get_ledger().status.remote(account), CALL_TIMEOUT_S)

    def _trouble(self, what: str, exc: BaseException) -> None:
        """Log at most every 10 s; the replica keeps serving on its last snapshot and local breakers."""
        if time.monotonic() - self._warned_at > 10:
            self._warned_at = time.monotonic()
            log.warning("control plane: %s failed (%s); serving on the last snapshot", what, exc.__class__.__name__)

    # --- the background sync ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="control-plane-sync")

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sync_once()
            except Exception as exc:  # never let the sync die: the replica would silently stop seeing the others
                log.exception("control plane sync failed")
                self._trouble("the sync", exc)
            await asyncio.sleep(max(0.0, self._cfg.interval_s - (time.monotonic() - started)))

    async def sync_once(self) -> None:
        await asyncio.gather(self._report(), self._top_up(), self._flush_charges(), self._top_up_budgets(),
                             return_exceptions=True)  # fmt: skip
        await self._release_idle()  # after the flush: a forgotten account's charges are already booked
        await self._pull()

    async def _report(self) -> None:
        batches = self._control.drain()
        self._ticks += 1
        if self._ticks % ALIVE_EVERY == 1:  # now and then an empty report says this replica is alive (probe owner)
            for name in self._limits:
                batches.setdefault(name, [])

        async def one(name: str, outcomes: list) -> None:  # type: ignore[type-arg]
            try:
                handle = await self._get_provider(name)
                self._control.actor_calls["background"] += 1
                await asyncio.wait_for(handle.report.remote(self._control.replica_id, outcomes), CALL_TIMEOUT_S)
            except (RayError, TimeoutError) as exc:
                self._providers.pop(name, None)
                self._trouble(f"reporting to provider:{name}", exc)

        await asyncio.gather(*(one(n, o) for n, o in batches.items() if n in self._limits))

    async def _top_up(self) -> None:
        for name, requests, tokens, held in self._control.low_leases():
            grant = await self._grant(name, requests, tokens, held)
            if grant is not None:
                self._control.install_grant(name, grant)

    async def _grant(self, name: str, requests: int, tokens: int, held: Held,
                     background: bool = True) -> Grant | None:  # fmt: skip
        try:
            handle = await self._get_provider(name)
            self._control.actor_calls["background"] += background
            ref = handle.grant.remote(self._control.replica_id, requests, tokens, held)
            return await asyncio.wait_for(ref, CALL_TIMEOUT_S)
        except (RayError, TimeoutError) as exc:
            self._providers.pop(name, None)
            self._trouble(f"a lease from provider:{name}", exc)
            return None

    async def refill(self, name: str, requests: int, tokens: int, held: Held) -> Grant | None:
        """On a request's path: its rate lease ran out (ReplicaControl counts these calls)."""
        return await self._grant(name, requests, tokens, held, background=False)

    async def _pull(self) -> None:
        try:
            router = await self._get_router()
            self._control.actor_calls["background"] += 1
            snap = await asyncio.wait_for(router.snapshot.remote(self._control.snapshot.version), CALL_TIMEOUT_S)
        except (RayError, TimeoutError) as exc:
            self._router = None
            self._trouble("the routing snapshot", exc)
            return
        if snap is None:
            self._control.install(self._control.snapshot)  # unchanged: still fresh
            return
        before = self._control.policy
        self._control.install(snap)
        after = self._control.policy
        if after is not None and (before is None or before.breakers != after.breakers):
            self._providers.clear()  # re-configure the provider actors with the reloaded breaker settings

    async def reload_policy(self) -> tuple[bool, str]:
        router = await self._get_router()
        result = await asyncio.wait_for(router.reload.remote(), CALL_TIMEOUT_S * 5)
        await self._pull()
        return result

    async def router_status(self) -> dict[str, object]:
        router = await self._get_router()
        return await asyncio.wait_for(router.status.remote(), CALL_TIMEOUT_S)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
