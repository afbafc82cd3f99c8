"""The control plane's plain classes, without Ray: shared breakers, statistics, leases, the Router's state and a
replica's local view."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.control.health import ProviderHealth
from gateway.control.ratelimit import RateLease, RateLimiter
from gateway.control.replica import RateLimit, ReplicaControl
from gateway.control.router_state import RouterState
from gateway.control.snapshot import Outcome
from gateway.routing.breaker import Breaker
from gateway.routing.policy import Breakers, load_policy
from gateway.schema import ErrorKind, GatewayError

CATALOG = load_config().models
POLICY_FILE = Path(__file__).parents[2] / "policies" / "routing.yaml"
POLICY = load_policy(POLICY_FILE, CATALOG)


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _out(replica: str, at: float, kind: str | None = None, **kw) -> Outcome:
    return Outcome("openai", "m", replica, at, kind, **kw)


def test_shared_breaker_opens_on_failures_from_several_replicas_and_one_replica_probes():
    clock = Clock()
    health = ProviderHealth("openai", Breakers(failure_threshold=3, cooldown_s=10), clock=clock)
    health.report("a", [_out("a", 1000.0, "server"), _out("a", 1000.2, "timeout")])
    assert health.view().models["m"].state == "closed"
    health.report("b", [_out("b", 1000.1, "overloaded")])  # the third consecutive failure, seen elsewhere
    view = health.view().models["m"]
    assert view.state == "open" and view.retry_at == pytest.approx(1001.1)  # a first opening is short: 1 s
    health.report("a", [_out("a", 999.0)])  # began before the breaker opened: says nothing about now
    assert health.view().models["m"].state == "open"
    clock.now = 1001.5
    view = health.view().models["m"]
    assert view.state == "half_open" and view.probe_owner in {"a", "b"}
    owner = view.probe_owner
    clock.now = 1003.0  # the owner sent nothing for a whole cooldown: the probe moves to the other replica
    health.report("a", [])
    health.report("b", [])
    assert health.view().models["m"].probe_owner not in {owner, None}
    health.report("a", [_out("a", 1003.5, "server")])  # the probe failed: open again, for twice as long
    view = health.view().models["m"]
    assert view.state == "open" and view.retry_at == pytest.approx(1003.5 + 2)
    clock.now = 1040.0
    health.report("b", [_out("b", 1039.0, "bad_request")])  # an answer, even a refusal, is a healthy provider
    assert health.view().models["m"].state == "closed"


def test_consecutive_openings_double_the_cooldown_up_to_its_maximum_and_a_success_resets_it():
    clock = Clock()
    breaker = Breaker(threshold=1, cooldown_s=10, clock=clock)
    waits = []
    for _ in range(6):
        breaker.failure()  # opens (from closed, then from each failed half-open probe)
        waits.append(breaker.retry_in())
        clock.now += breaker.retry_in()
        assert breaker.allow()  # half-open: the probe goes through
    assert waits == [1, 2, 4, 8, 10, 10]
    breaker.success()
    breaker.failure()
    assert breaker.retry_in() == 1  # closed in between: the next blip is short again


def test_when_every_target_is_open_one_panic_call_goes_to_the_least_recently_opened():
    clock = Clock()
    breakers = Breakers(failure_threshold=1, cooldown_s=30)
    control = ReplicaControl("r1", POLICY.model_copy(update={"breakers": breakers}), clock=clock)
    for model in ("a", "b"):
        breaker = control.board.get("openai", model)
        breaker.clock = clock
        breaker.failure()
        clock.now += 0.1
    assert control.blocked("openai", "a") and control.blocked("openai", "b")
    assert control.panic_pass([("openai", "b"), ("openai", "a")]) == ("openai", "a")
    assert control.panic_pass([("openai", "b"), ("openai", "a")]) is None  # one call in flight per replica
    control.record("openai", "a", 0.0, GatewayError(ErrorKind.CONNECTION, "still down"))
    assert control.panic_pass([("openai", "a")]) is None  # and at most one per PANIC_INTERVAL_S: a trickle
    clock.now += 0.3
    assert control.panic_pass([("openai", "a")]) == ("openai", "a")
    control.record("openai", "a", clock.now, None)  # it answered: the breaker closes at once
    assert control.blocked("openai", "a") is None


def test_statistics_and_recent_errors():
    health = ProviderHealth("openai", Breakers())
    health.report("a", [_out("a", 1.0, latency_ms=100.0, ttft_ms=float(i)) for i in range(1, 101)])
    health.report("a", [_out("a", 2.0, "rate_limited", message="slow down")])
    view = health.view()
    m = view.models["m"]
    assert m.requests == 101 and m.failures == 1 and m.ewma_latency_ms == pytest.approx(100.0)
    assert m.p95_ttft_ms == 96.0 and m.ttft_samples == 100 and 80 < m.ewma_ttft_ms < 100
    assert view.recent_errors[-1].kind == "rate_limited" and view.recent_errors[-1].message == "slow down"
    assert m.state == "closed"  # a 429 is not a health failure
    assert pickle.loads(pickle.dumps(view)) == view


def test_rate_limiter_never_grants_more_than_the_limit_and_shrinks_near_it():
    clock = Clock(0.0)
    limiter = RateLimiter(rpm=100, tpm=None, clock=clock)
    grants = [limiter.grant(r, 40, 0).requests for r in ("a", "b", "a", "b", "a", "b", "a", "b") * 10]
    assert sum(grants) == 100
    assert grants[:3] == [40, 15, 11] and grants[-1] == 0  # at most half of what is left, split between holders
    clock.now = 60.0  # a new minute: the full limit again
    assert limiter.grant("a", 10, 0).requests == 10


def test_token_limit_and_lease_spending():
    clock = Clock(30.0)
    limiter = RateLimiter(rpm=None, tpm=1000, clock=clock)
    lease = RateLease(chunk_requests=5, chunk_tokens=400, clock=clock)
    assert not lease.take(10)  # nothing leased yet
    lease.install(limiter.grant("a", *lease.want(10)))
    assert lease.take(300) and not lease.take(200) and lease.low()
    lease.install(limiter.grant("a", *lease.want(200)))
    assert lease.take(200)
    lease.install(limiter.grant("a", *lease.want(900)))  # 1000 - 800 granted: not enough for 900
    assert not lease.take(900)
    clock.now = 60.0  # the window ended: leftovers are gone
    assert not lease.take(1)


def test_router_reload_rejects_an_invalid_policy_and_keeps_the_old(tmp_path):
    file = tmp_path / "routing.yaml"
    file.write_text(POLICY_FILE.read_text())
    state = RouterState(POLICY, str(file), CATALOG)
    first = state.snapshot()
    assert state.snapshot() is first  # no change, same version
    file.write_text(POLICY_FILE.read_text().replace("total: 4", "total: 3"))
    ok, message = state.reload()
    snap = state.snapshot()
    assert ok and snap.version > first.version and snap.policy.retry.total == 3 and snap.policy_version == 2
    file.write_text("task_classes:\n  quick:\n    candidates: [no-such-model]\n")
    ok, message = state.reload()
    snap = state.snapshot()
    assert not ok and "no-such-model" in message and snap.policy_error == message
    assert snap.policy.retry.total == 3 and snap.policy_version == 2  # the old policy is still in force


def test_router_picks_up_an_edited_file(tmp_path):
    file = tmp_path / "routing.yaml"
    file.write_text(POLICY_FILE.read_text())
    state = RouterState(POLICY, str(file), CATALOG)
    file.write_text(POLICY_FILE.read_text().replace("per_candidate: 2", "per_candidate: 3"))
    import os

    os.utime(file, (1, 1))  # a different mtime, whatever the file system's resolution
    state.reload_if_changed()
    assert state.snapshot().policy.retry.per_candidate == 3


def _snapshot_with(health: ProviderHealth, version: int):
    state = RouterState(POLICY, None, CATALOG, version=version)
    state.absorb(health.view())
    return state.snapshot()


def test_replica_obeys_the_shared_breaker_and_only_the_probe_owner_probes():
    clock = Clock()
    breakers = Breakers(failure_threshold=2, cooldown_s=5)
    health = ProviderHealth("openai", breakers, clock=clock)
    policy = POLICY.model_copy(update={"breakers": breakers})
    a = ReplicaControl("a", policy, clock=clock)
    b = ReplicaControl("b", policy, clock=clock)
    assert a.blocked("openai", "m") is None and b.blocked("openai", "m") is None
    error = GatewayError(ErrorKind.SERVER, "boom")
    a.record("openai", "m", clock.now, error)
    a.record("openai", "m", clock.now, error)
    assert "this replica" in a.blocked("openai", "m")  # tripped locally at once
    assert b.blocked("openai", "m") is None  # b knows nothing yet
    health.report("a", a.drain()["openai"])
    health.seen("b")
    b.install(_snapshot_with(health, 10))
    assert "shared" in b.blocked("openai", "m") and b.retry_in("openai", "m") == pytest.approx(1)  # first: short
    clock.now += 6
    snap = _snapshot_with(health, 11)
    a.install(snap)
    b.install(snap)
    owner, other = (a, b) if snap.model("openai", "m").probe_owner == "a" else (b, a)
    assert "another replica" in other.blocked("openai", "m")
    assert owner.blocked("openai", "m") is None
    assert "in flight" in owner.blocked("openai", "m")  # one probe at a time
    owner.record("openai", "m", clock.now, None, latency_ms=5.0)
    health.report(owner.replica_id, owner.drain()["openai"])
    snap = _snapshot_with(health, 12)
    other.install(snap)
    assert other.blocked("openai", "m") is None and snap.model("openai", "m").state == "closed"


def test_a_stale_snapshot_falls_back_to_local_breakers_and_old_versions_are_ignored():
    clock = Clock()
    health = ProviderHealth("openai", Breakers(failure_threshold=1, cooldown_s=60), clock=clock)
    health.report("x", [_out("x", clock.now, "server")])
    replica = ReplicaControl("a", POLICY, stale_after_s=10, clock=clock)
    replica.install(first := _snapshot_with(health, 5))
    assert replica.blocked("openai", "m") is not None
    replica.install(_snapshot_with(ProviderHealth("openai", Breakers()), 1))  # older: ignored
    assert replica.snapshot is first
    clock.now += 11  # no sync for longer than stale_after_s (the Router is down): local breakers only
    assert replica.stale and replica.blocked("openai", "m") is None


async def test_leases_refill_through_the_actor_call_only_when_spent():
    clock = Clock(0.0)
    limiter = RateLimiter(rpm=3, tpm=None, clock=clock)
    calls = []

    async def refiller(provider, requests, tokens, held):
        calls.append(provider)
        return limiter.grant("a", requests, tokens, held)

    replica = ReplicaControl("a", POLICY, limits={"openai": RateLimit(rpm=3)}, clock=clock)
    replica.refiller = refiller
    assert replica.take("anthropic", 10)  # no limit configured: free
    admitted = 0
    for _ in range(5):
        if replica.take("openai", 1) or await replica.refill_and_take("openai", 1):
            admitted += 1
    assert admitted == 3 and replica.lease_window_end("openai") == 60.0
    assert len(calls) == 4  # the lease shrinks near the limit (1 + 1 + 1), one refusal, then no call till next minute
    clock.now = 60.0
    assert await replica.refill_and_take("openai", 1) and len(calls) == 5


async def test_an_unreachable_limiter_allows_one_chunk_a_window_never_unbounded():
    clock = Clock(0.0)

    async def unreachable(provider, requests, tokens, held):
        return None

    replica = ReplicaControl("a", POLICY, limits={"openai": RateLimit(rpm=200)}, clock=clock)  # chunks of 10
    replica.refiller = unreachable
    admitted = 0
    for _ in range(50):
        admitted += replica.take("openai", 1) or await replica.refill_and_take("openai", 1)
    assert admitted == 10  # one chunk (a twentieth of the limit), then refused until the next window
    clock.now = 60.0
    assert await replica.refill_and_take("openai", 1)


def test_a_limiter_restarted_mid_minute_counts_what_the_replicas_already_hold():
    clock = Clock(10.0)
    limiter = RateLimiter(rpm=100, tpm=None, clock=clock)
    lease = RateLease(chunk_requests=40, chunk_tokens=0, clock=clock)
    lease.install(limiter.grant("a", *lease.want(), lease.held()))
    lease.install(limiter.grant("a", *lease.want(), lease.held()))
    before = lease.held().requests
    restarted = RateLimiter(rpm=100, tpm=None, clock=clock)  # the provider actor came back empty
    more = restarted.grant("a", 40, 0, lease.held()).requests
    assert before + more <= 100  # without `held` it would grant up to 100 again this minute
    clock.now = 60.0
    assert lease.held().requests == 0  # a new minute: nothing held yet


def test_a_cancelled_attempt_only_adds_a_first_token_lower_bound():
    health = ProviderHealth("openai", Breakers(failure_threshold=1))
    health.report("a", [Outcome("openai", "m", "a", 1.0, None, "", None, 900.0, censored=True)])
    m = health.view().models["m"]
    assert m.state == "closed" and m.requests == 0 and m.p95_ttft_ms == 900.0
