"""A replica's rate-limit gate over an in-process bucket owner (no Ray): admission, refusals with retry-after,
reconcile up and down, streams drawing past their allowance, slots, and the owner being unreachable."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.limits.bucket import MILLI, BucketSpec
from gateway.limits.gate import LimitGate, RateRefused
from gateway.limits.owner import BucketOwner
from gateway.limits.policy import BucketRef, LimitRule, LimitsPolicy, buckets_for
from gateway.limits.store import MemoryBucketStore
from gateway.schema import ErrorKind, GatewayError, GatewayMetadata
from gateway.schema.limits import LimitSpec
from gateway.schema.principal import Principal


class Owner:
    """The bucket owner as the control link reaches it, counting calls; `down` makes it unreachable."""

    def __init__(self, clock: list[float]) -> None:
        self.owner = BucketOwner(MemoryBucketStore(), clock_ms=lambda: int(clock[0] * 1000), monotonic=lambda: clock[0])
        self.calls = 0
        self.down = False

    def granter(self, replica: str):
        async def grant(ref: BucketRef, want: int, need: int):
            self.calls += 1
            await asyncio.sleep(0)  # another call may run meanwhile, as with a real actor call
            if self.down:
                return None
            return self.owner.grant(replica, ref.id, ref.spec, want, need)

        return grant


def _gates(n: int, clock: list[float], owner: Owner, **kw) -> list[LimitGate]:
    gates = []
    for i in range(n):
        gate = LimitGate(n, clock=lambda: clock[0], **kw)
        gate.granter = owner.granter(f"r{i}")
        gates.append(gate)
    return gates


def _refs(**limits) -> tuple[BucketRef, ...]:
    policy = LimitsPolicy(limits={"per-key": LimitRule(scope="key", **limits)})
    return buckets_for(policy, GatewayMetadata(principal=Principal(key_id="k1", via="key", org="acme")))


async def _burst(gates, refs, n, inp=0, out=0):
    async def one(i):
        try:
            return await gates[i % len(gates)].admit(refs, inp, out)
        except RateRefused as exc:
            return exc

    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_a_key_with_rpm_10_gets_exactly_10_of_30_over_two_replicas_and_429s_name_the_limit():
    clock = [1000.0]
    owner = Owner(clock)
    gates, refs = _gates(2, clock, owner), _refs(rpm=10)
    results = await _burst(gates, refs, 30)
    admitted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, RateRefused)]
    assert len(admitted) == 10 and len(refused) == 20
    err = refused[0]
    assert err.kind is ErrorKind.RATE_LIMITED and err.status_code == 429 and err.code == "requests_per_minute_exceeded"
    assert "key `k1`" in err.message and "10 requests per minute" in err.message
    assert err.retry_after == 6  # one request refills every 6 s
    assert err.rate is not None and err.rate.requests_limit == 10 and err.rate.requests_remaining == 0
    calls = owner.calls
    await _burst(gates, refs, 20)  # refusals are remembered: no actor call per refused request
    assert owner.calls == calls
    clock[0] += 6.0  # one request's worth refilled
    results = await _burst(gates, refs, 4)
    assert sum(not isinstance(r, Exception) for r in results) == 1


async def test_remaining_decreases_with_each_call_and_resets_as_a_duration():
    clock = [0.0]
    gate = _gates(1, clock, Owner(clock))[0]
    refs = _refs(rpm=100, tpm=10_000)
    first = await gate.admit(refs, 100, 100)
    second = await gate.admit(refs, 100, 100)
    assert first.status.requests_remaining > second.status.requests_remaining
    assert first.status.tokens_remaining > second.status.tokens_remaining
    assert second.status.tokens_limit == 10_000 and second.status.requests_reset_ms > 0


async def test_reconcile_gives_back_an_overestimate_and_charges_an_underestimate_as_debt():
    clock = [0.0]
    gate = _gates(1, clock, Owner(clock))[0]
    refs = _refs(tpm=1000)
    ticket = await gate.admit(refs, 100, 400)  # 500 estimated
    gate.reconcile(ticket, 100, 50)  # 150 used: 350 back
    assert gate.holdings()[refs[0].id] == 1000 * MILLI // 2 - 150 * MILLI  # the grant was half the bucket
    ticket = await gate.admit(refs, 10, 10)
    gate.reconcile(ticket, 10, 2000)  # far more than estimated: the balance goes negative (a debt)
    ((_, amount),) = gate.returns()
    assert amount < 0  # charged to the bucket at the next sync, which delays the next calls
    assert gate.counters["refused"] == 0


async def test_a_stream_past_its_allowance_draws_more_and_is_never_cut():
    clock = [0.0]
    gate = _gates(1, clock, Owner(clock))[0]
    refs = _refs(tpm=1000)
    ticket = await gate.admit(refs, 10, 10)  # the lease: a tenth of the bucket (100), 20 of it taken
    gate.draw(ticket, 300)  # 290 beyond the allowance, drawn as it streams (no exception: limits do not cut)
    assert ticket.drawn == 290
    gate.reconcile(ticket, 10, 300)  # all 310 used: nothing comes back
    assert gate.returns() == [(refs[0], (100 - 310) * MILLI)]  # the overrun is a debt, charged at the next sync


async def test_a_call_larger_than_the_whole_bucket_waits_for_a_full_bucket_instead_of_failing_forever():
    clock = [0.0]
    gate = _gates(1, clock, Owner(clock))[0]
    refs = _refs(tpm=1000)
    ticket = await gate.admit(refs, 100, 5000)  # 5 100 estimated on a 1 000 bucket: it takes the whole bucket
    assert ticket.taken == [1000 * MILLI]


async def test_concurrency_slots_are_held_for_the_call_and_released_at_its_end():
    clock = [0.0]
    owner = Owner(clock)
    gates = _gates(2, clock, owner)
    refs = _refs(concurrent=3)
    results = await _burst(gates, refs, 6)
    held = [(gates[i % 2], r) for i, r in enumerate(results) if not isinstance(r, Exception)]
    assert len(held) == 3
    refused = [r for r in results if isinstance(r, RateRefused)]
    assert refused[0].code == "concurrency_exceeded" and refused[0].retry_after is None  # only a release frees one
    for gate, ticket in held:
        gate.reconcile(ticket, 0, 0)
    clock[0] += 5.0  # idle slots go back to the owner
    for g in gates:
        for ref, amount in g.returns():
            g.returned(ref, amount, owner.owner.give("r", ref.id, ref.spec, amount))
    again = await _burst(gates, refs, 3)
    assert not any(isinstance(r, Exception) for r in again)


async def test_the_owner_unreachable_serves_from_a_local_bucket_of_capacity_over_replicas():
    clock = [0.0]
    owner = Owner(clock)
    owner.down = True
    gates = _gates(2, clock, owner)
    refs = _refs(rpm=10)
    results = await _burst(gates, refs, 30)
    admitted = sum(not isinstance(r, Exception) for r in results)
    assert admitted == 10  # 5 per replica: bounded, never unlimited
    assert all(g.counters["fallback_grants"] >= 1 and g.counters["owner_unreachable"] == 1 for g in gates)


async def test_fail_closed_refuses_with_503_while_the_owner_is_unreachable():
    clock = [0.0]
    owner = Owner(clock)
    owner.down = True
    gate = _gates(1, clock, owner, on_store_error="fail_closed")[0]
    with pytest.raises(GatewayError) as info:
        await gate.admit(_refs(rpm=10), 0, 0)
    assert info.value.status_code == 503 and info.value.code == "rate_limit_unavailable"


async def test_random_interleavings_of_three_replicas_never_exceed_the_limit():
    """Calls of random sizes over three replicas, reconciled at random, for two simulated minutes: what was admitted
    never exceeds the capacity plus the refill since the start (admission takes before it serves)."""
    rng = random.Random(11)
    clock = [0.0]
    owner = Owner(clock)
    gates = _gates(3, clock, owner)
    refs = _refs(tpm=5000)
    admitted, open_tickets = 0, []
    for _ in range(600):
        clock[0] += rng.random() * 0.2
        gate = rng.choice(gates)
        try:
            ticket = await gate.admit(refs, rng.randint(1, 200), rng.randint(1, 200))
            admitted += ticket.taken[0]
            open_tickets.append((gate, ticket))
        except RateRefused:
            pass
        if open_tickets and rng.random() < 0.5:
            g, t = open_tickets.pop(rng.randrange(len(open_tickets)))
            g.reconcile(t, t.input_tokens, t.output_tokens)  # used as estimated
        for g in gates:
            for ref, amount in g.returns():
                g.returned(ref, amount, owner.owner.give("r", ref.id, ref.spec, amount))
        assert admitted <= refs[0].spec.capacity + int(clock[0] * 1000) * refs[0].spec.per_minute // 60_000


def test_limits_come_from_the_policy_and_from_the_key_record_and_users_are_their_orgs_own():
    policy = LimitsPolicy(limits={"users": LimitRule(scope="user", rpm=5), "acme": LimitRule(scope="org", key="acme",
                                                                                             tpm=100)})  # fmt: skip
    key = Principal(key_id="k9", via="key", org="acme", limits=LimitSpec(rpm=60, concurrent=2))
    refs = buckets_for(policy, GatewayMetadata(principal=key, org="acme", user="alice"))
    ids = {r.id for r in refs}
    assert ids == {"user:acme/alice:users:requests", "org:acme:acme:tokens", "key:k9:key-record:requests",
                   "key:k9:key-record:concurrent"}  # fmt: skip
    other = buckets_for(policy, GatewayMetadata(principal=key.model_copy(update={"org": "beta"}), org="beta",
                                                user="alice"))  # fmt: skip
    assert "user:beta/alice:users:requests" in {r.id for r in other}
    assert BucketSpec(5 * MILLI, 5 * MILLI) == next(r.spec for r in refs if r.scope == "user")
    only_acme = LimitsPolicy(limits={"acme-users": LimitRule(scope="user", org="acme", rpm=5)})

    def users(org: str) -> list[str]:
        return [r.id for r in buckets_for(only_acme, GatewayMetadata(principal=key, org=org, user="bob"))
                if r.scope == "user"]  # fmt: skip

    assert users("acme") == ["user:acme/bob:acme-users:requests"] and users("beta") == []


def test_a_refusal_crosses_a_process_as_the_gateway_error_a_client_sees():
    import pickle

    refused = RateRefused("rate limit exceeded: key `k1`", "requests_per_minute_exceeded", 6, None)
    back = pickle.loads(pickle.dumps(refused))
    assert isinstance(back, GatewayError) and back.kind is ErrorKind.RATE_LIMITED
    assert (back.code, back.retry_after, back.status_code) == ("requests_per_minute_exceeded", 6, 429)
