"""The bucket owner (a plain class the limits actor wraps): grants leases from the store's buckets, takes back
what replicas return, and knows who holds what (the share a grant gets, slots a vanished replica held)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.limits.bucket import BucketSpec, reset_ms
from gateway.limits.store import BucketStore

HOLDER_S = 10.0  # a replica that took from a bucket this recently shares it (grants are split between holders)
SLOT_TTL_S = 60.0  # slots (concurrency) held by a replica not heard from this long are taken back


@dataclass(frozen=True, slots=True)
class Grant:
    """A lease on one bucket (0: refused, then `wait_ms` until the asked need would fit, None: never), with the
    bucket's level after it (a replica's estimate of what is left, for the `x-ratelimit-remaining-*` headers)."""

    bucket: str
    granted: int
    level: int
    wait_ms: int | None = 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class BucketOwner:
    def __init__(self, store: BucketStore, clock_ms: Callable[[], int] = _now_ms,
                 monotonic: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._store = store
        self._clock_ms, self._monotonic = clock_ms, monotonic
        self._leased: dict[str, dict[str, int]] = {}  # bucket -> replica -> what it holds (as far as known)
        self._seen: dict[str, float] = {}  # replica -> last heard from (monotonic)
        self._took: dict[str, dict[str, float]] = {}  # bucket -> replica -> last grant (monotonic)

    def _holders(self, bucket: str, replica: str) -> int:
        now = self._monotonic()
        took = self._took.setdefault(bucket, {})
        took[replica] = now
        for other in [r for r, at in took.items() if now - at > HOLDER_S]:
            del took[other]
        return len(took)

    def grant(self, replica: str, bucket: str, spec: BucketSpec, want: int, need: int) -> Grant:
        """Up to `want`, at least `need` (else refused), from one bucket (blocking I/O with DynamoDB)."""
        self._seen[replica] = self._monotonic()
        if spec.per_minute == 0:
            self._reclaim(bucket, spec)
        taken = self._store.take(bucket, spec, want, need, self._holders(bucket, replica), self._clock_ms())
        if taken.granted:
            held = self._leased.setdefault(bucket, {})
            held[replica] = held.get(replica, 0) + taken.granted
        return Grant(bucket, taken.granted, taken.level, taken.wait_ms)

    def give(self, replica: str, bucket: str, spec: BucketSpec, amount: int) -> int:
        """A replica returns what it will not use (positive) or owes what its calls used beyond their estimate
        (negative: the bucket goes into debt). Returns the level after."""
        self._seen[replica] = self._monotonic()
        held = self._leased.get(bucket, {})
        if amount > 0 and replica in held:
            held[replica] = max(0, held[replica] - amount)
        return self._store.give(bucket, spec, amount, self._clock_ms())

    def alive(self, replica: str, holdings: dict[str, int]) -> None:
        """A replica's periodic word: it is there, and what it holds unspent of each bucket now."""
        self._seen[replica] = self._monotonic()
        for bucket, amount in holdings.items():
            self._leased.setdefault(bucket, {})[replica] = max(0, amount)

    def _reclaim(self, bucket: str, spec: BucketSpec) -> None:
        """Slots are not refilled by time: what a replica that went away held comes back after SLOT_TTL_S."""
        now, held = self._monotonic(), self._leased.get(bucket, {})
        for replica in [r for r, amount in held.items() if amount and now - self._seen.get(r, now) > SLOT_TTL_S]:
            self._store.give(bucket, spec, held.pop(replica), self._clock_ms())

    def status(self, bucket: str, spec: BucketSpec) -> dict[str, int]:
        """capacity, level (what is left unleased), refill per minute, leased (held by replicas), debt (milli-units:
        a request or a token is 1 000), and the ms until the bucket is full again."""
        level = self._store.level(bucket, spec, self._clock_ms())
        leased = sum(self._leased.get(bucket, {}).values())
        return {"capacity": spec.capacity, "level": max(0, level.milli), "refill_per_minute": spec.per_minute,
                "leased": leased, "debt": max(0, -level.milli), "full_in_ms": reset_ms(spec, level)}  # fmt: skip

    def close(self) -> None:
        self._store.close()
