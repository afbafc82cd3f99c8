"""The key registry (the state behind the `key_registry` actor): key records over a KeyStore, every change
numbered so replicas pull what changed (revocations and rotations reach them within a sync, not at a TTL)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.auth.keys import KeyRecord, Rotation, SecretVersion
from gateway.auth.store import KeyStore

ROTATIONS_KEPT_S = 86_400.0  # an Idempotency-Key replays a rotation for a day
CHANGES_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed since a replica's version: the records to replace, or `reset` (too far behind: drop all)."""

    version: int
    records: tuple[KeyRecord, ...] = ()
    reset: bool = False


class KeyConflict(Exception):
    """A write lost a race with another writer more than a few times."""


class KeyRegistry:
    def __init__(self, store: KeyStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self.version = int(clock() * 1_000_000)  # a restarted registry's versions stay ahead of what replicas hold
        self._log: deque[tuple[int, str]] = deque(maxlen=CHANGES_KEPT)
        self._first = self.version

    # --- reads ------------------------------------------------------------------------------------------------
    def lookup(self, key_id: str) -> KeyRecord | None:
        return self._store.get(key_id)

    def lookup_many(self, key_ids: Iterable[str]) -> dict[str, KeyRecord | None]:
        return {k: self._store.get(k) for k in key_ids}

    def all(self) -> list[KeyRecord]:
        return self._store.all()

    def changes(self, since: int) -> Changes | None:
        """None when nothing changed since `since`; `reset` when `since` predates the kept log (or this registry)."""
        if since >= self.version:
            return None
        if since < self._first or (len(self._log) == self._log.maxlen and since < self._log[0][0]):
            return Changes(self.version, reset=True)
        ids = dict.fromkeys(k for v, k in self._log if v > since)
        records = tuple(r for r in (self._store.get(k) for k in ids) if r is not None)
        return Changes(self.version, records)

    # --- writes -----------------------------------------------------------------------------------------------
    def create(self, record: KeyRecord) -> KeyRecord:
        record = record.model_copy(update={"created_at": self._clock(), "revision": 1})
        if not self._store.put(record, None):
            raise KeyConflict(f"a key with id `{record.key_id}` exists")
        return self._changed(record)

    def rotate(self, key_id: str, secret: SecretVersion, grace_s: float, rotation: Rotation | None) -> KeyRecord | None:
        """Add `secret` as the newest version; older ones keep working for `grace_s`. With an idempotent rotation
        already done under the same Idempotency-Key, nothing changes and that record is returned as it is."""

        def change(record: KeyRecord, now: float) -> KeyRecord | None:
            if record.status != "active":
                return None
            if rotation is not None and any(r.idempotency == rotation.idempotency for r in record.rotations):
                return None
            ends = now + grace_s
            kept = [
                v if v.expires_at is not None and v.expires_at <= ends else v.model_copy(update={"expires_at": ends})
                for v in record.secrets
                if v.expires_at is None or v.expires_at > now
            ]
            version = secret.model_copy(update={"version": max((v.version for v in record.secrets), default=0) + 1})
            rotations = [r for r in record.rotations if r.at > now - ROTATIONS_KEPT_S]
            if rotation is not None:
                rotations.append(rotation.model_copy(update={"version": version.version, "at": now}))
            return record.model_copy(update={"secrets": (*kept, version), "rotations": tuple(rotations)})

        return self._update(key_id, change)

    def revoke(self, key_id: str) -> KeyRecord | None:
        return self._update(key_id, lambda r, _: None if r.status == "revoked" else r.model_copy(
            update={"status": "revoked"}))  # fmt: skip

    def _update(self, key_id: str, change: Callable[[KeyRecord, float], KeyRecord | None]) -> KeyRecord | None:
        """Compare-and-swap on the record's revision (other clusters may write the same store); None: no such key."""
        for _ in range(8):
            record = self._store.get(key_id)
            if record is None:
                return None
            new = change(record, self._clock())
            if new is None:
                return record
            new = new.model_copy(update={"revision": record.revision + 1})
            if self._store.put(new, record.revision):
                return self._changed(new)
        raise KeyConflict(f"key `{key_id}` is being changed by another writer; try again")

    def _changed(self, record: KeyRecord) -> KeyRecord:
        self.version = max(self.version + 1, int(self._clock() * 1_000_000))
        self._log.append((self.version, record.key_id))
        return record
