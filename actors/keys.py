"""KeyRegistryActor: a thin Ray shell over `gateway.auth.registry.KeyRegistry` with its store (SQLite or DynamoDB).
It holds digests only: it never sees a secret or the pepper."""

from __future__ import annotations

import asyncio

import ray

from gateway.auth.keys import KeyRecord, Rotation, SecretVersion
from gateway.auth.registry import Changes, KeyRegistry
from gateway.auth.store import open_key_store
from gateway.config import AuthConfig


@ray.remote(num_cpus=0, max_restarts=-1)
class KeyRegistryActor:
    def __init__(self, auth: AuthConfig) -> None:
        self._registry = KeyRegistry(open_key_store(auth))
        self._lock = asyncio.Lock()  # one write at a time (store calls run in a thread, off the actor's loop)

    async def ready(self) -> bool:
        return True

    async def lookup(self, key_id: str) -> KeyRecord | None:
        return await asyncio.to_thread(self._registry.lookup, key_id)

    async def lookup_many(self, key_ids: list[str]) -> dict[str, KeyRecord | None]:
        return await asyncio.to_thread(self._registry.lookup_many, key_ids)

    async def changes(self, since: int) -> Changes | None:
        if since >= self._registry.version:
            return None
        return await asyncio.to_thread(self._registry.changes, since)

    async def all(self) -> list[KeyRecord]:
        return await asyncio.to_thread(self._registry.all)

    async def create(self, record: KeyRecord) -> KeyRecord:
        async with self._lock:
            return await asyncio.to_thread(self._registry.create, record)

    async def rotate(self, key_id: str, secret: SecretVersion, grace_s: float,
                     rotation: Rotation | None) -> KeyRecord | None:  # fmt: skip
        async with self._lock:
            return await asyncio.to_thread(self._registry.rotate, key_id, secret, grace_s, rotation)

    async def revoke(self, key_id: str) -> KeyRecord | None:
        async with self._lock:
            return await asyncio.to_thread(self._registry.revoke, key_id)
