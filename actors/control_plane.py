"""A replica's link to the control plane: finds or creates the named actors and runs the background sync
(outcome batches out, lease top-ups, snapshots in). Nothing here runs per request, except `refill` when a
rate lease has run out and `budget_grant` when a budget balance cannot cover a call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ray.exceptions import RayError

from actors.ledger import BudgetLedgerActor
from actors.limits import LimitOwnerActor
from actors.provider import ProviderActor
from actors.router import RouterActor
from gateway.budgets.gate import BudgetGate
from gateway.budgets.ledger import Lease
from gateway.budgets.policy import Account
from gateway.budgets.store import TotalRow
from gateway.config import GatewayConfig
from gateway.control.ratelimit import Grant, Held
from gateway.control.replica import ReplicaControl
from gateway.limits.gate import LimitGate
from gateway.limits.owner import Grant as BucketGrant
from gateway.limits.policy import BucketRef
from gateway.routing.policy import Breakers, RoutingPolicy
from gateway.runtime_rules import Body, Overlay

log = logging.getLogger("gateway.control")
CALL_TIMEOUT_S = 2.0
SETUP_TIMEOUT_S = CALL_TIMEOUT_S * 5  # an actor's first call may wait for it to start
ALIVE_EVERY = 10  # ticks
ROUTER, LEDGER, LIMITS = "router", "budget_ledger", "limits"
RULE_OWNERS = {"limits": LIMITS, "budgets": LEDGER}  # a kind of runtime rules -> the actor that keeps them
FAILURES = (RayError, TimeoutError)  # what a guarded call turns into "the actor is down, serve on"

# name, constructor arguments -> a handle of that named actor (created if it does not exist); a handle's
# `method.remote(*args)` returns an awaitable. Ray's named actors in production (`ray_actors`), fakes in tests.
Actors = Callable[[str, tuple[Any, ...]], Any]
ACTOR_CLASSES = {ROUTER: RouterActor, LEDGER: BudgetLedgerActor, LIMITS: LimitOwnerActor,
                 "provider": ProviderActor}  # by name prefix  # fmt: skip


def ray_actors(namespace: str) -> Actors:
    """The control plane's detached named actors in `namespace`, created by the first replica that asks."""

    def named(name: str, args: tuple[Any, ...]) -> Any:
        cls = ACTOR_CLASSES[name.split(":", 1)[0]]
        return cls.options(name=name, namespace=namespace, lifetime="detached", get_if_exists=True).remote(*args)

    return named


def connect(config: GatewayConfig, policy: RoutingPolicy | None,
            providers: Mapping[str, tuple[int | None, int | None]], control: ReplicaControl,
            gate: BudgetGate | None = None, limits: LimitGate | None = None,
            rules: Mapping[str, Overlay[Any]] | None = None) -> ControlLink:  # fmt: skip
    """A link over Ray's named actors, installed as the replica's rate-lease refiller, budget and bucket granter."""
    link = ControlLink(config, policy, providers, control, gate, limits, rules,
                       actors=ray_actors(config.control.namespace))  # fmt: skip
    control.refiller = link.refill
    if gate is not None:
        gate.granter = link.budget_grant
    if limits is not None:
        limits.granter = link.bucket_grant
    return link


class ControlLink:
    """One per replica. Holds a handle per control-plane actor (looked up again after a failure: the actor may
    have been re-created), the background sync task and when trouble was last logged. Every actor call goes
    through `_ask` (raises) or `_guarded` (logs, answers (False, None)): a down actor never fails a request."""

    def __init__(self, config: GatewayConfig, policy: RoutingPolicy | None,
                 providers: Mapping[str, tuple[int | None, int | None]], control: ReplicaControl,
                 gate: BudgetGate | None = None, limits: LimitGate | None = None,
                 rules: Mapping[str, Overlay[Any]] | None = None, *, actors: Actors) -> None:  # fmt: skip
        self._cfg = config.control
        self._rules = dict(rules or {})  # kind -> the replica's overlay of that kind's runtime rules
        self._limit_gate, self._limits_cfg = limits, config.limits
        self._catalog = dict(config.models)
        self._policy, self._path = policy, config.routing_policy
        self._limits = dict(providers)
        self._control = control
        self._gate, self._budgets = gate, config.budgets
        self._actors = actors
        self._handles: dict[str, asyncio.Future[Any]] = {}  # actor name -> its handle, once set up
        self._task: asyncio.Task[None] | None = None
        self._warned_at = 0.0
        self._ticks = 0

    # --- the actors -----------------------------------------------------------------------------------------
    def _router_args(self) -> tuple[Any, ...]:
        return (self._policy, self._path, self._catalog, list(self._limits), self._cfg.namespace, self._cfg.interval_s)

    def _provider_args(self, name: str) -> tuple[Breakers, int | None, int | None]:
        policy = self._control.policy  # the policy in force (a reload may have changed the breakers)
        return (policy.breakers if policy is not None else Breakers(), *self._limits[name])

    async def _handle(self, actor: str) -> Any:
        """The actor's handle, set up once however many calls want it at the same time (a failed set-up is
        dropped with the failed call, in `_ask`)."""
        if actor not in self._handles:
            self._handles[actor] = asyncio.ensure_future(self._open(actor))
        return await asyncio.shield(self._handles[actor])  # a cancelled caller does not cancel the others' set-up

    async def _open(self, actor: str) -> Any:
        """A new handle, told this replica's configuration first (router, providers)."""
        if actor == ROUTER:
            handle = self._actors(actor, self._router_args())
            await asyncio.wait_for(handle.adopt.remote(*self._router_args()), SETUP_TIMEOUT_S)
        elif actor == LEDGER:
            handle = self._actors(actor, (self._budgets,))
        elif actor == LIMITS:
            handle = self._actors(actor, (self._limits_cfg,))
        else:
            name = actor.removeprefix("provider:")
            settings = self._provider_args(name)
            handle = self._actors(actor, (name, *settings))
            await asyncio.wait_for(handle.configure.remote(*settings), SETUP_TIMEOUT_S)
        return handle

    async def _ask(self, actor: str, method: str, *args: Any, path: str | None = "background",
                   wait_s: float = CALL_TIMEOUT_S) -> Any:  # fmt: skip
        """One actor call, counted under `path` of the replica's actor calls. On a failure the handle is
        dropped (looked up again next time, after a restart) and the failure raised."""
        try:
            handle = await self._handle(actor)
            if path is not None:
                self._control.actor_calls[path] += 1
            return await asyncio.wait_for(getattr(handle, method).remote(*args), wait_s)
        except FAILURES:
            self._handles.pop(actor, None)
            raise

    async def _guarded(self, what: str, actor: str, method: str, *args: Any, **kw: Any) -> tuple[bool, Any]:
        """`_ask` that never raises: (True, the answer), or (False, None) with the trouble logged."""
        try:
            return True, await self._ask(actor, method, *args, **kw)
        except FAILURES as exc:
            self._trouble(what, exc)
            return False, None

    def _trouble(self, what: str, exc: BaseException) -> None:
        """Log at most every 10 s; the replica keeps serving on its last snapshot and local breakers."""
        if time.monotonic() - self._warned_at > 10:
            self._warned_at = time.monotonic()
            log.warning("control plane: %s failed (%s); serving on the last snapshot", what, exc.__class__.__name__)

    # --- budgets ---------------------------------------------------------------------------------------------
    async def budget_grant(self, account: Account, want: tuple[int, int], need: tuple[int, int]) -> Lease | None:
        """On a request's path, only when a budget balance cannot cover the call; None: the ledger is down."""
        rid = self._control.replica_id
        return (await self._guarded("a budget lease", LEDGER, "grant", rid, account, want, need,
                                    path="request_path"))[1]  # fmt: skip

    async def _to_ledger(self, what: str, method: str, *args: Any) -> tuple[bool, Any]:
        return await self._guarded(what, LEDGER, method, self._control.replica_id, *args)

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
        if self._gate is not None:
            await self._guarded("starting the budget ledger", LEDGER, "ready", path=None, wait_s=CALL_TIMEOUT_S * 15)

    async def budget_status(self, account: str) -> dict[str, int | None]:
        await self._flush_charges()
        return await self._ask(LEDGER, "status", account, path=None)  # type: ignore[no-any-return]

    # --- rate limits ----------------------------------------------------------------------------------------
    async def bucket_grant(self, ref: BucketRef, want: int, need: int) -> BucketGrant | None:
        """On a request's path, only when a bucket balance cannot cover the call; None: the owner is down."""
        rid = self._control.replica_id
        return (await self._guarded("a rate-limit lease", LIMITS, "grant", rid, ref.id, ref.spec, want, need,
                                    path="request_path"))[1]  # fmt: skip

    async def _sync_limits(self) -> None:
        """Debts and idle balances go back, low balances are topped up, and now and then the owner hears what this
        replica holds (so slots of a replica that vanished can be taken back)."""
        gate = self._limit_gate
        if gate is None or gate.owner_down():
            return
        rid = self._control.replica_id
        returns = gate.returns()
        if returns:
            ok, levels = await self._guarded("returning rate-limit leases", LIMITS, "give", rid,
                                             [(r.id, r.spec, amount) for r, amount in returns])  # fmt: skip
            if not ok:
                return
            for (ref, amount), level in zip(returns, levels, strict=True):
                gate.returned(ref, amount, level)
        wants = gate.wants()
        if wants:
            ok, grants = await self._guarded("rate-limit leases", LIMITS, "grant_many", rid,
                                             [(r.id, r.spec, want, 0) for r, want in wants])  # fmt: skip
            if not ok:
                return
            for (ref, _), grant in zip(wants, grants, strict=True):
                gate.install(ref, grant)
        if self._ticks % ALIVE_EVERY == 1 and gate.holdings():
            await self._guarded("the rate-limit holdings", LIMITS, "alive", rid, gate.holdings())

    async def limit_status(self, ref: BucketRef) -> dict[str, int]:
        return await self._ask(LIMITS, "status", ref.id, ref.spec, path=None)  # type: ignore[no-any-return]

    # --- rules set at run time ------------------------------------------------------------------------------
    async def put_rule(self, kind: str, name: str, body: Body | None) -> int:
        """Stored by the kind's owner, in force here at once (the other replicas within a sync interval)."""
        rules = await self._ask(RULE_OWNERS[kind], "put_rule", name, body, path=None)
        self._rules[kind].install(rules)
        return rules.version  # type: ignore[no-any-return]

    async def _pull_rules(self) -> None:
        for kind, overlay in self._rules.items():
            ok, rules = await self._guarded(f"the runtime {kind} rules", RULE_OWNERS[kind], "rules", overlay.version)
            if ok and rules is not None:
                overlay.install(rules)

    async def budget_spend(self, prefix: str, after: str | None, limit: int) -> tuple[list[TotalRow], str | None]:
        await self._flush_charges()  # this replica's settled calls are in it
        return await self._ask(LEDGER, "spend", prefix, after, limit, path=None)  # type: ignore[no-any-return]

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
                             self._sync_limits(), self._pull_rules(), return_exceptions=True)  # fmt: skip
        await self._release_idle()  # after the flush: a forgotten account's charges are already booked
        await self._pull()

    async def _report(self) -> None:
        batches = self._control.drain()
        self._ticks += 1
        if self._ticks % ALIVE_EVERY == 1:  # now and then an empty report says this replica is alive (probe owner)
            for name in self._limits:
                batches.setdefault(name, [])
        rid = self._control.replica_id
        await asyncio.gather(*(self._guarded(f"reporting to provider:{n}", f"provider:{n}", "report", rid, outcomes)
                               for n, outcomes in batches.items() if n in self._limits))  # fmt: skip

    async def _top_up(self) -> None:
        for name, requests, tokens, held in self._control.low_leases():
            grant = await self._grant(name, requests, tokens, held)
            if grant is not None:
                self._control.install_grant(name, grant)

    async def _grant(self, name: str, requests: int, tokens: int, held: Held,
                     path: str = "background") -> Grant | None:  # fmt: skip
        rid = self._control.replica_id
        return (await self._guarded(f"a lease from provider:{name}", f"provider:{name}", "grant",
                                    rid, requests, tokens, held, path=path))[1]  # fmt: skip

    async def refill(self, name: str, requests: int, tokens: int, held: Held) -> Grant | None:
        """On a request's path: its rate lease ran out (ReplicaControl counts these calls itself)."""
        return await self._grant(name, requests, tokens, held, path=None)

    async def _pull(self) -> None:
        ok, snap = await self._guarded("the routing snapshot", ROUTER, "snapshot", self._control.snapshot.version)
        if not ok:
            return
        if snap is None:
            self._control.install(self._control.snapshot)  # unchanged: still fresh
            return
        before = self._control.policy
        self._control.install(snap)
        after = self._control.policy
        if after is not None and (before is None or before.breakers != after.breakers):
            for actor in [a for a in self._handles if a.startswith("provider:")]:
                del self._handles[actor]  # re-configured at their next call with the reloaded breaker settings

    async def reload_policy(self) -> tuple[bool, str]:
        result = await self._ask(ROUTER, "reload", path=None, wait_s=SETUP_TIMEOUT_S)
        await self._pull()
        return result  # type: ignore[no-any-return]

    async def router_status(self) -> dict[str, object]:
        return await self._ask(ROUTER, "status", path=None)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
