"""A replica's ControlLink over fake actors (no Ray): what it sends, what it installs, and that a down actor is
logged, dropped and found again without failing the sync or a request."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

from ray.exceptions import RayActorError

from actors.control_plane import ControlLink, connect
from gateway.budgets.gate import BudgetGate
from gateway.config import load_config
from gateway.control.health import ProviderHealth
from gateway.control.ratelimit import RateLimiter
from gateway.control.replica import RateLimit, ReplicaControl
from gateway.control.router_state import RouterState
from gateway.limits.bucket import MILLI
from gateway.limits.gate import LimitGate
from gateway.limits.owner import BucketOwner
from gateway.limits.policy import LimitRule, LimitsPolicy, buckets_for
from gateway.limits.store import MemoryBucketStore
from gateway.routing.policy import Breakers, load_policy
from gateway.schema import ErrorKind, GatewayError, GatewayMetadata

CONFIG = load_config()
POLICY_FILE = Path(__file__).parents[2] / "policies" / "routing.yaml"
POLICY = load_policy(POLICY_FILE, CONFIG.models)
LIMITS = {"openai": (200, None), "anthropic": (None, None)}


class FakeProvider:
    """ProviderActor's methods over the same plain classes."""

    def __init__(self, name: str, breakers: Breakers, rpm: int | None, tpm: int | None, clock: Clock) -> None:
        limiter = RateLimiter(rpm, tpm, clock) if rpm or tpm else None
        self.health = ProviderHealth(name, breakers, limiter, clock=clock)
        self.configured: list[Breakers] = []
        self.reports: list[tuple[str, list[Any]]] = []
        self.asks: list[tuple[Any, ...]] = []

    def configure(self, breakers: Breakers, rpm: int | None, tpm: int | None) -> None:
        self.configured.append(breakers)
        self.health.configure(breakers)

    def report(self, replica: str, outcomes: list[Any]) -> None:
        self.reports.append((replica, outcomes))
        self.health.report(replica, outcomes)

    def grant(self, replica: str, requests: int, tokens: int, held: Any = None) -> Any:
        self.asks.append((replica, requests, tokens, held))
        limiter = self.health.limiter
        return limiter.grant(replica, requests, tokens, held) if limiter is not None else None


class FakeRouter:
    """RouterActor's methods: each snapshot gathers the fake providers' views."""

    def __init__(self, providers: dict[str, FakeProvider], version: int, policy: Any, path: str | None,
                 *_: Any) -> None:  # fmt: skip
        self.state = RouterState(policy, path, CONFIG.models, version)
        self.providers = providers
        self.adopted = 0

    def adopt(self, *args: Any) -> None:
        self.adopted += 1

    def snapshot(self, known_version: int = -1) -> Any:
        for p in self.providers.values():
            self.state.absorb(p.health.view())
        snap = self.state.snapshot()
        return None if snap.version == known_version else snap

    def reload(self) -> tuple[bool, str]:
        return self.state.reload()

    def status(self) -> dict[str, object]:
        return self.state.status()


class FakeLedger:
    def __init__(self, *_: Any) -> None:
        self.grants: list[tuple[Any, ...]] = []

    def grant(self, *args: Any) -> None:
        self.grants.append(args)


class FakeOwner:
    """The bucket owner actor's methods over the real BucketOwner (in memory)."""

    def __init__(self, clock: Clock) -> None:
        self.owner = BucketOwner(MemoryBucketStore(), clock_ms=lambda: int(clock.now * 1000), monotonic=clock)

    def grant(self, replica: str, bucket: str, spec: Any, want: int, need: int) -> Any:
        return self.owner.grant(replica, bucket, spec, want, need)

    def grant_many(self, replica: str, asks: list[Any]) -> list[Any]:
        return [self.owner.grant(replica, *ask) for ask in asks]

    def give(self, replica: str, returns: list[Any]) -> list[int]:
        return [self.owner.give(replica, *r) for r in returns]

    def alive(self, replica: str, holdings: dict[str, int]) -> None:
        self.owner.alive(replica, holdings)


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Handle:
    """`handle.method.remote(*args)` -> an awaitable, as a Ray actor handle; raises RayActorError while down."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self._cluster, self._name = cluster, name

    def __getattr__(self, method: str) -> Any:
        cluster, name = self._cluster, self._name

        async def call(*args: Any) -> Any:
            if name in cluster.down:
                raise RayActorError()
            answer = getattr(cluster.actors[name], method)(*args)
            return await answer if inspect.isawaitable(answer) else answer

        return type("Method", (), {"remote": staticmethod(call)})()


class Cluster:
    """The fake named actors: created on first ask (as get_if_exists), `down` ones fail every call."""

    def __init__(self) -> None:
        self.actors: dict[str, Any] = {}
        self.asked: list[str] = []
        self.down: set[str] = set()
        self.clock = Clock()

    def providers(self) -> dict[str, FakeProvider]:
        return {n.removeprefix("provider:"): a for n, a in self.actors.items() if n.startswith("provider:")}

    def __call__(self, name: str, args: tuple[Any, ...]) -> Handle:
        self.asked.append(name)
        if name not in self.actors:
            if name == "router":
                version = int(self.clock.now * 1e6)  # versions count from the router's start
                self.actors[name] = FakeRouter(self.providers(), version, *args)
            elif name == "budget_ledger":
                self.actors[name] = FakeLedger(*args)
            elif name == "limits":
                self.actors[name] = FakeOwner(self.clock)
            else:
                self.actors[name] = FakeProvider(*args, clock=self.clock)
        if name == "router":
            self.actors[name].providers = self.providers()
        return Handle(self, name)

    def restart(self, name: str) -> None:
        """The actor died and Ray will create it empty at the next ask."""
        del self.actors[name]


def _link(cluster: Cluster, gate: BudgetGate | None = None, config: Any = CONFIG) -> tuple[ControlLink, ReplicaControl]:
    limits = {"openai": RateLimit(rpm=200)}
    control = ReplicaControl("r1", POLICY, limits=limits, stale_after_s=10, clock=cluster.clock)
    link = ControlLink(config, POLICY, LIMITS, control, gate, actors=cluster)
    control.refiller = link.refill
    return link, control


def _fail(control: ReplicaControl, n: int = 1) -> None:
    for _ in range(n):
        control.record("openai", "gpt-4o-mini", 1.0, GatewayError(ErrorKind.SERVER, "boom"))


async def test_a_sync_reports_outcomes_tops_up_leases_and_installs_the_snapshot():
    cluster = Cluster()
    link, control = _link(cluster)
    _fail(control)
    await link.sync_once()
    openai = cluster.actors["provider:openai"]
    assert openai.configured == [POLICY.breakers] and cluster.actors["router"].adopted == 1
    assert [len(outcomes) for replica, outcomes in openai.reports if replica == "r1"] == [1]
    assert control.snapshot.version > 0 and control.snapshot.providers["openai"].models["gpt-4o-mini"].failures == 1
    assert control.take("openai", 1)  # the lease was topped up in the background
    await link.sync_once()
    assert sorted(set(cluster.asked)) == sorted(cluster.asked)  # handles are kept: each actor was looked up once
    assert control.actor_calls["request_path"] == 0


async def test_a_down_provider_actor_is_logged_once_dropped_and_found_again_after_its_restart(caplog):
    cluster = Cluster()
    link, control = _link(cluster)
    await link.sync_once()
    cluster.down.add("provider:openai")
    _fail(control)
    with caplog.at_level(logging.WARNING, "gateway.control"):
        await link.sync_once()  # never raises: the replica serves on
        await link.sync_once()
    assert len([r for r in caplog.records if "provider:openai" in r.getMessage()]) == 1  # rate-limited log
    cluster.down.clear()
    cluster.restart("provider:openai")
    _fail(control)
    await link.sync_once()
    assert cluster.asked.count("provider:openai") >= 2  # the dropped handle was looked up again
    restarted = cluster.actors["provider:openai"]
    assert restarted.configured == [POLICY.breakers] and any(outcomes for _, outcomes in restarted.reports)


async def test_refill_on_a_request_path_sends_what_the_replica_holds_and_survives_a_down_actor():
    cluster = Cluster()
    link, control = _link(cluster)
    await link.sync_once()
    while control.take("openai", 1):
        pass
    assert await control.refill_and_take("openai", 1)
    replica, _, _, held = cluster.actors["provider:openai"].asks[-1]
    assert replica == "r1" and held.requests > 0  # a restarted limiter learns what this replica already holds
    cluster.down.add("provider:openai")
    while control.take("openai", 1):
        pass
    admitted = [await control.refill_and_take("openai", 1) for _ in range(30)]
    assert 0 < sum(admitted) <= 10  # one bounded chunk (a twentieth of 200), never unbounded
    assert control.actor_calls["request_path"] == 31  # each a refill ask (ReplicaControl counts them)


async def test_a_down_router_leaves_the_last_snapshot_until_it_goes_stale():
    cluster = Cluster()
    link, control = _link(cluster)
    await link.sync_once()
    first = control.snapshot
    cluster.down.add("router")
    await link.sync_once()
    assert control.snapshot is first and not control.stale
    cluster.clock.now += 11
    await link.sync_once()
    assert control.snapshot is first and control.stale  # local breakers only from here
    cluster.down.clear()
    cluster.restart("router")
    await link.sync_once()
    assert cluster.actors["router"].adopted == 1  # the re-created router was told this replica's configuration
    assert control.snapshot.version > first.version and not control.stale


async def test_a_reloaded_policy_with_other_breakers_reconfigures_the_provider_actors(tmp_path):
    policy_file = tmp_path / "routing.yaml"
    policy_file.write_text(POLICY_FILE.read_text())
    cluster = Cluster()
    link, control = _link(cluster, config=CONFIG.model_copy(update={"routing_policy": str(policy_file)}))
    await link.sync_once()
    policy_file.write_text(POLICY_FILE.read_text() + "\nbreakers: {failure_threshold: 9, cooldown_s: 5}\n")
    assert (await link.reload_policy())[0]
    assert control.policy.breakers == Breakers(failure_threshold=9, cooldown_s=5)
    _fail(control)
    await link.sync_once()  # the next call to the provider actor configures it first
    assert cluster.actors["provider:openai"].configured == [POLICY.breakers, control.policy.breakers]
    assert (await link.router_status())["policy_version"] == 2


async def test_budget_grant_asks_the_ledger_on_the_request_path_and_none_while_it_is_down():
    cluster = Cluster()
    link, control = _link(cluster)
    account = object()
    assert await link.budget_grant(account, (5, 0), (1, 0)) is None  # the fake ledger grants nothing
    assert cluster.actors["budget_ledger"].grants == [("r1", account, (5, 0), (1, 0))]
    cluster.down.add("budget_ledger")
    assert await link.budget_grant(account, (5, 0), (1, 0)) is None
    assert control.actor_calls["request_path"] == 2


def test_connect_installs_the_link_as_refiller_and_granter_without_touching_ray():
    control = ReplicaControl("r1", POLICY)
    gate = BudgetGate(10, 10)
    link = connect(CONFIG, POLICY, LIMITS, control, gate)
    assert control.refiller == link.refill and gate.granter == link.budget_grant


async def test_rate_limit_leases_are_asked_once_on_the_path_then_topped_up_and_returned_by_the_sync():
    cluster = Cluster()
    gate = LimitGate(1, clock=cluster.clock)
    control = ReplicaControl("r1", POLICY, stale_after_s=10, clock=cluster.clock)
    link = ControlLink(CONFIG, POLICY, LIMITS, control, None, gate, actors=cluster)
    gate.granter = link.bucket_grant
    refs = buckets_for(LimitsPolicy(limits={"k": LimitRule(scope="org", rpm=100)}), GatewayMetadata(org="acme"))
    for _ in range(6):
        gate.reconcile(await gate.admit(refs, 0, 0), 0, 0)
    assert control.actor_calls["request_path"] == 1  # the first grant: a tenth of the bucket
    await link.sync_once()  # 4 of 10 left: topped up in the background
    owner = cluster.actors["limits"].owner
    assert owner.status(refs[0].id, refs[0].spec)["level"] < 90 * MILLI
    for _ in range(6):
        gate.reconcile(await gate.admit(refs, 0, 0), 0, 0)
    assert control.actor_calls["request_path"] == 1  # still: no actor call per request
    cluster.clock.now += 3  # idle: what is left goes back
    await link.sync_once()
    assert gate.holdings()[refs[0].id] == 0
    assert owner.status(refs[0].id, refs[0].spec)["level"] == (100 - 12 + 5) * MILLI  # 12 used, 3 s refilled 5
    cluster.down.add("limits")
    ticket = await gate.admit(refs, 0, 0)  # the owner is away: the fallback bucket serves, bounded
    assert ticket and gate.counters["fallback_grants"] == 1
