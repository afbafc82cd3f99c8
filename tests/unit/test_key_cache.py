"""A replica's key cache: hits and misses kept for their TTLs (an injected clock), the change feed replacing records
at once, hot keys listed for a background refresh, one lookup in flight per key, and what it does when the registry
cannot be asked (a stale record serves; with nothing known, RegistryUnavailable)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.auth.cache import KeyCache, RegistryUnavailable
from gateway.auth.keys import KeyRecord
from tests.unit.auth_support import Clock


class Registry:
    """The cache's lookup: counts calls, can be made to fail or to wait."""

    def __init__(self, *records: KeyRecord) -> None:
        self.records = {r.key_id: r for r in records}
        self.calls: list[str] = []
        self.down = False
        self.gate: asyncio.Event | None = None

    async def lookup(self, key_id: str) -> KeyRecord | None:
        self.calls.append(key_id)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ConnectionError("registry unreachable")
        return self.records.get(key_id)


def _rec(key_id: str = "key00001", **fields: object) -> KeyRecord:
    return KeyRecord.model_validate({"key_id": key_id, "name": "n", "org": "acme", **fields})


@pytest.fixture
def clock() -> Clock:
    return Clock(1_000.0)


async def test_a_hit_is_served_from_the_cache_for_hit_s(clock: Clock) -> None:
    registry = Registry(_rec())
    cache = KeyCache(registry.lookup, hit_s=30.0, miss_s=5.0, clock=clock)
    assert cache.fresh("key00001") is None  # never seen
    assert await cache.fetch("key00001") == registry.records["key00001"]
    assert cache.lookups == 1
    clock.advance(29.9)
    entry = cache.fresh("key00001")
    assert entry is not None and entry.record == registry.records["key00001"]
    assert registry.calls == ["key00001"]  # fresh() never calls the registry
    clock.advance(0.2)
    assert cache.fresh("key00001") is None  # past hit_s: the next request fetches again
    await cache.fetch("key00001")
    assert cache.lookups == 2 and len(registry.calls) == 2


async def test_a_miss_is_remembered_for_miss_s_only(clock: Clock) -> None:
    registry = Registry()
    cache = KeyCache(registry.lookup, hit_s=30.0, miss_s=5.0, clock=clock)
    assert await cache.fetch("nokey001") is None
    clock.advance(4.9)
    entry = cache.fresh("nokey001")
    assert entry is not None and entry.record is None  # an unknown key does not reach the registry again
    clock.advance(0.2)
    assert cache.fresh("nokey001") is None
    registry.records["nokey001"] = _rec("nokey001")  # created meanwhile: found after miss_s at the latest
    assert await cache.fetch("nokey001") == registry.records["nokey001"]


async def test_the_change_feed_replaces_a_cached_record_at_once(clock: Clock) -> None:
    registry = Registry(_rec())
    cache = KeyCache(registry.lookup, clock=clock)
    await cache.fetch("key00001")
    revoked = _rec(status="revoked", revision=2)
    cache.apply(42, [revoked])
    entry = cache.fresh("key00001")
    assert entry is not None and entry.record == revoked  # without waiting for hit_s
    assert cache.version == 42
    assert registry.calls == ["key00001"]
    cache.apply(43, [_rec("key00002")])
    assert cache.fresh("key00002") is not None  # records the replica never asked for are kept too


async def test_a_reset_drops_everything_cached(clock: Clock) -> None:
    registry = Registry(_rec(), _rec("key00002"))
    cache = KeyCache(registry.lookup, clock=clock)
    await cache.fetch("key00001")
    await cache.fetch("nokey001")
    cache.apply(7, [], reset=True)
    assert cache.version == 7
    assert cache.fresh("key00001") is None and cache.fresh("nokey001") is None
    cache.apply(8, [_rec("key00002")], reset=True)  # a reset with records: only those remain
    assert cache.fresh("key00002") is not None


async def test_due_lists_used_keys_past_half_their_time(clock: Clock) -> None:
    registry = Registry(_rec("hot00001"), _rec("cold0001"))
    cache = KeyCache(registry.lookup, hit_s=30.0, clock=clock)
    for key_id in ("hot00001", "cold0001", "miss0001"):
        await cache.fetch(key_id)
    clock.advance(4)
    assert cache.fresh("miss0001") is not None  # a used miss
    clock.advance(6)
    assert cache.fresh("hot00001") is not None  # used since its fetch
    assert cache.due() == []  # not yet half of hit_s
    clock.advance(6)
    assert cache.due() == ["hot00001"]  # the unused key and the miss are left to expire
    cache.refreshed({"hot00001": _rec("hot00001", revision=2)})
    assert cache.due() == []  # refreshed: fresh again, and unused since
    clock.advance(29)
    entry = cache.fresh("hot00001")
    assert entry is not None and entry.record is not None and entry.record.revision == 2
    assert registry.calls == ["hot00001", "cold0001", "miss0001"]


async def test_registry_unavailable_when_nothing_is_known(clock: Clock) -> None:
    registry = Registry(_rec())
    registry.down = True
    cache = KeyCache(registry.lookup, clock=clock)
    with pytest.raises(RegistryUnavailable):
        await cache.fetch("key00001")
    registry.down = False
    await cache.fetch("nokey001")  # a miss is cached ...
    registry.down = True
    clock.advance(6)
    with pytest.raises(RegistryUnavailable):  # ... but a stale miss proves nothing
        await cache.fetch("nokey001")


async def test_a_stale_record_serves_while_the_registry_is_down(clock: Clock) -> None:
    record = _rec()
    registry = Registry(record)
    cache = KeyCache(registry.lookup, hit_s=30.0, clock=clock)
    await cache.fetch("key00001")
    registry.down = True
    clock.advance(3_600)
    assert cache.fresh("key00001") is None
    assert await cache.fetch("key00001") == record
    registry.down = False
    registry.records["key00001"] = _rec(revision=5)
    assert (await cache.fetch("key00001")).revision == 5  # back: the registry's answer again


async def test_concurrent_fetches_of_one_key_make_one_lookup(clock: Clock) -> None:
    registry = Registry(_rec())
    registry.gate = asyncio.Event()
    cache = KeyCache(registry.lookup, clock=clock)
    tasks = [asyncio.ensure_future(cache.fetch("key00001")) for _ in range(5)]
    await asyncio.sleep(0)  # let them all start (no time passes)
    registry.gate.set()
    results = await asyncio.gather(*tasks)
    assert all(r == registry.records["key00001"] for r in results)
    assert registry.calls == ["key00001"] and cache.lookups == 1


async def test_concurrent_fetches_all_fail_when_the_registry_is_down(clock: Clock) -> None:
    registry = Registry(_rec())
    registry.gate, registry.down = asyncio.Event(), True
    cache = KeyCache(registry.lookup, clock=clock)
    tasks = [asyncio.ensure_future(cache.fetch("key00001")) for _ in range(3)]
    await asyncio.sleep(0)
    registry.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, RegistryUnavailable) for r in results)
    assert len(registry.calls) == 1


def test_rechecks_are_throttled_per_key(clock: Clock) -> None:
    cache = KeyCache(Registry().lookup, clock=clock)
    assert cache.may_recheck("key00001", 1.0)
    assert not cache.may_recheck("key00001", 1.0)
    assert cache.may_recheck("key00002", 1.0)  # another key has its own allowance
    clock.advance(0.99)
    assert not cache.may_recheck("key00001", 1.0)
    clock.advance(0.01)
    assert cache.may_recheck("key00001", 1.0)


def test_a_recheck_is_allowed_at_clock_zero() -> None:
    cache = KeyCache(Registry().lookup, clock=lambda: 0.0)  # a monotonic clock may start near 0
    assert cache.may_recheck("key00001", 1.0)


async def test_the_cache_is_bounded_least_recently_fetched_first(clock: Clock) -> None:
    registry = Registry(*(_rec(f"key0000{i}") for i in range(4)))
    cache = KeyCache(registry.lookup, max_entries=3, clock=clock)
    for i in range(4):
        await cache.fetch(f"key0000{i}")
    assert cache.fresh("key00000") is None
    assert all(cache.fresh(f"key0000{i}") is not None for i in range(1, 4))


async def test_a_cancelled_first_fetch_does_not_strand_the_others_waiting_for_it(clock: Clock) -> None:
    registry = Registry(_rec())
    registry.gate = asyncio.Event()
    cache = KeyCache(registry.lookup, clock=clock)
    first = asyncio.ensure_future(cache.fetch("key00001"))
    await asyncio.sleep(0)  # its lookup is in flight
    second = asyncio.ensure_future(cache.fetch("key00001"))
    await asyncio.sleep(0)  # waiting for the first one's answer
    first.cancel()
    registry.gate.set()
    for _ in range(10):  # let the loop run (no time passes)
        await asyncio.sleep(0)
    try:
        assert second.done()  # answered by a lookup of its own, not left waiting forever
        assert second.result() is not None
    finally:
        second.cancel()
