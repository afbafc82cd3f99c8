"""A replica's cache of key records: hits kept ≤ `hit_s` (hot keys refreshed in the background before that), misses
≤ `miss_s`; the registry's change feed replaces records as they change, so a revocation lands within a sync."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from gateway.auth.keys import KeyRecord

Lookup = Callable[[str], Awaitable[KeyRecord | None]]


@dataclass(slots=True)
class Entry:
    record: KeyRecord | None  # None: the registry has no such key
    fetched: float
    used: bool = False  # asked for since it was fetched (a candidate for a background refresh)


class RegistryUnavailable(Exception):
    """The registry could not be asked and nothing (not even stale) is known of the key."""


class KeyCache:
    def __init__(self, lookup: Lookup, hit_s: float = 30.0, miss_s: float = 5.0, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._lookup = lookup
        self._hit_s, self._miss_s = hit_s, miss_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._pending: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._rechecked: dict[str, float] = {}  # key id -> when it was last asked for again off schedule
        self.version = 0  # of the registry's change feed, as last applied
        self.lookups = 0  # registry calls on a request's path (first sight, or an expired entry)

    def fresh(self, key_id: str) -> Entry | None:
        """The cached entry if it is still within its time (the common case: no await, no actor call)."""
        entry = self._entries.get(key_id)
        if entry is None:
            return None
        ttl = self._hit_s if entry.record is not None else self._miss_s
        if self._clock() - entry.fetched > ttl:
            return None
        entry.used = True
        return entry

    def may_recheck(self, key_id: str, every_s: float) -> bool:
        """Whether a record may be asked for again off its schedule (a secret it does not know: perhaps a rotation
        on another replica); at most once every `every_s` per key, so wrong secrets cannot flood the registry."""
        now = self._clock()
        if now - self._rechecked.get(key_id, -every_s) < every_s:
            return False
        if len(self._rechecked) > self._max:
            self._rechecked.clear()
        self._rechecked[key_id] = now
        return True

    async def fetch(self, key_id: str) -> KeyRecord | None:
        """Ask the registry (one call in flight per key id). If it cannot be asked, a stale record still serves
        (revocations cannot be issued while it is down either) and is kept for another `hit_s`, so requests do not
        each wait on the dead registry; with nothing known, RegistryUnavailable."""
        while (pending := self._pending.get(key_id)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise  # this request was cancelled itself
                # the request that started the lookup left before it ended: ask again, for ourselves
        future: asyncio.Future[KeyRecord | None] = asyncio.get_running_loop().create_future()
        self._pending[key_id] = future
        try:
            self.lookups += 1
            record = await self._lookup(key_id)
        except asyncio.CancelledError:
            future.cancel()  # the waiters start their own lookup
            raise
        except Exception as exc:
            stale = self._entries.get(key_id)
            error = RegistryUnavailable(type(exc).__name__)
            if stale is not None and stale.record is not None:
                self._put(key_id, stale.record)
                future.set_result(stale.record)
                return stale.record
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it
            raise error from None
        finally:
            self._pending.pop(key_id, None)
        self._put(key_id, record)
        future.set_result(record)
        return record

    def _put(self, key_id: str, record: KeyRecord | None) -> None:
        self._entries[key_id] = Entry(record, self._clock())
        self._entries.move_to_end(key_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def apply(self, version: int, records: Iterable[KeyRecord], reset: bool = False) -> None:
        """The registry's changes since our version (every changed record replaces what we hold)."""
        if reset:
            self._entries.clear()
        for record in records:
            self._put(record.key_id, record)
        self.version = version

    def due(self) -> list[str]:
        """Keys used since their fetch and past half their time: refreshed in the background, so a hot key never
        expires on a request's path."""
        now, half = self._clock(), self._hit_s / 2
        return [k for k, e in self._entries.items() if e.used and e.record is not None and now - e.fetched > half]

    def refreshed(self, records: dict[str, KeyRecord | None]) -> None:
        for key_id, record in records.items():
            self._put(key_id, record)
