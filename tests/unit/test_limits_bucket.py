"""Token-bucket arithmetic (no Ray): refill and debt against an exact rational model, shares near empty, the
embedded store's durability across a restart, and the over-grant bound under random interleavings of holders."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from gateway.limits.bucket import MILLI, MINUTE_MS, BucketSpec, Level, full, refilled, reset_ms, share, wait_ms
from gateway.limits.owner import BucketOwner
from gateway.limits.store import MemoryBucketStore, SqliteBucketStore


def test_refill_never_grants_more_than_an_exact_model_and_forgoes_at_most_a_millisecond_per_read():
    """Lazy refills against an exact (rational) bucket: never above it; each read forgoes at most one millisecond's
    refill (the timestamp advances by whole milliseconds, rounded in the limit's favour)."""
    rng = random.Random(7)
    for _ in range(200):
        spec = BucketSpec(rng.randint(1, 10_000) * MILLI, rng.randint(1, 10_000) * MILLI)
        start = rng.randint(-spec.capacity, spec.capacity)
        level, exact, t = Level(start, 0), Fraction(start), 0
        for reads in range(1, 51):
            step = rng.randint(0, 3_000)
            t += step
            level = refilled(spec, level, t)
            exact = min(Fraction(spec.capacity), exact + Fraction(step * spec.per_minute, MINUTE_MS))
            assert level.milli <= exact  # never more than earned
            assert exact - level.milli <= reads * (spec.per_minute / MINUTE_MS + 1)
            assert level.milli <= spec.capacity


def test_a_debt_is_paid_back_by_refill_before_anything_is_granted():
    spec = BucketSpec(60 * MILLI, 60 * MILLI)  # 60 per minute: one per second
    level = Level(-5 * MILLI, 0)  # five in debt
    assert wait_ms(spec, level, MILLI) == 6_000  # six seconds until one call fits again
    assert refilled(spec, level, 5_999).milli < 1 * MILLI
    assert refilled(spec, level, 6_000).milli == 1 * MILLI
    assert reset_ms(spec, Level(0, 0)) == MINUTE_MS


def test_a_clock_that_goes_back_refills_nothing():
    spec = BucketSpec(10 * MILLI, 10 * MILLI)
    level = refilled(spec, Level(0, 10_000), 5_000)
    assert level == Level(0, 10_000)


def test_a_slot_pool_never_refills_by_time():
    spec = BucketSpec(4 * MILLI, 0)
    assert refilled(spec, Level(0, 0), 10**9).milli == 0
    assert wait_ms(spec, Level(0, 0), MILLI) is None


@pytest.mark.parametrize(("level", "want", "need", "holders", "expected"), [
    (100, 50, 10, 1, 50),  # plenty: what was asked
    (100, 80, 10, 1, 50),  # at most half of what is left
    (100, 80, 10, 5, 10),  # shared by five holders: a tenth each, at least the need
    (15, 80, 10, 5, 10),  # near empty: one call's need
    (9, 80, 10, 1, 0),  # not even the need: refused
])  # fmt: skip
def test_a_lease_shrinks_to_one_calls_need_near_empty(level, want, need, holders, expected):
    assert share(level, want, need, holders) == expected


def test_the_embedded_store_survives_a_restart_mid_minute(tmp_path):
    """A restarted owner must not hand out a full bucket again."""
    spec = BucketSpec(10 * MILLI, 10 * MILLI)
    store = SqliteBucketStore(tmp_path / "limits.db")
    taken = store.take("k", spec, 8 * MILLI, MILLI, 1, 1_000)
    assert taken.granted == 5 * MILLI  # half of a full bucket
    store.close()
    again = SqliteBucketStore(tmp_path / "limits.db")
    assert again.level("k", spec, 1_000).milli == 5 * MILLI


def test_replicas_together_never_take_more_than_capacity_plus_refill():
    """Random interleavings of five holders asking, over two simulated minutes: the sum granted never exceeds
    the capacity plus what the elapsed time refilled (rounded down)."""
    rng = random.Random(3)
    for trial in range(30):
        clock = [0]
        spec = BucketSpec(rng.randint(5, 500) * MILLI, rng.randint(5, 500) * MILLI)
        owner = BucketOwner(MemoryBucketStore(), clock_ms=lambda c=clock: c[0], monotonic=lambda c=clock: c[0] / 1000)
        granted = 0
        for _ in range(400):
            clock[0] += rng.randint(0, 300)
            need = rng.randint(1, 3) * MILLI
            grant = owner.grant(f"r{rng.randint(1, 5)}", f"b{trial}", spec, rng.randint(1, 20) * MILLI, need)
            assert grant.granted == 0 or grant.granted >= need
            granted += grant.granted
            assert granted <= spec.capacity + clock[0] * spec.per_minute // MINUTE_MS


def test_given_back_never_fills_above_capacity():
    spec = BucketSpec(10 * MILLI, 10 * MILLI)
    store = MemoryBucketStore()
    assert store.give("k", spec, 5 * MILLI, 0) == 10 * MILLI
    assert store.give("k", spec, -15 * MILLI, 0) == -5 * MILLI  # a debt
    assert full(spec, 0).milli == 10 * MILLI
