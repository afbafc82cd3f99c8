"""Shared pieces of the caller-auth unit tests: injectable clocks and an in-process key stack (SQLite store, registry,
key admin, replica cache, authenticator) with no Ray and no sleeping."""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.auth import admin as admin_module
from gateway.auth import authenticator as authenticator_module
from gateway.auth.admin import KeyAdmin, LocalRegistry
from gateway.auth.audit import Audit
from gateway.auth.authenticator import Authenticator
from gateway.auth.cache import KeyCache
from gateway.auth.keys import KeyHasher, KeyRecord, parse_key
from gateway.auth.registry import KeyRegistry
from gateway.auth.store import SqliteKeyStore

PEPPER = b"unit-test-pepper-0123456789abcdef"
CATALOG = ("gpt-4o-mini", "gpt-4o", "claude-3-5-haiku", "claude-sonnet-4", "text-embedding-3-small")
TIERS = ("gold", "bronze")
T0 = 1_750_000_000.0  # a fixed "now" (Unix seconds)


class Clock:
    """A clock that moves only when a test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def bearer_headers(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def secret_of(key: str) -> str:
    parsed = parse_key(key)
    assert parsed is not None
    return parsed[1]


class RegistryLink:
    """The cache's way to the registry (KeyLink.lookup in a replica); a test can cut it."""

    def __init__(self, local: LocalRegistry) -> None:
        self.local = local
        self.down = False

    async def lookup(self, key_id: str) -> KeyRecord | None:
        if self.down:
            raise ConnectionError("the key registry actor is unreachable")
        return await self.local.lookup(key_id)


@dataclass
class KeyStack:
    """One registry over a SQLite store, an admin over it, and one replica's cache + authenticator."""

    wall: Clock  # time.time() of the registry, the admin and the authenticator
    mono: Clock  # the cache's clock
    store: SqliteKeyStore
    registry: KeyRegistry
    local: LocalRegistry
    link: RegistryLink
    hasher: KeyHasher
    admin: KeyAdmin
    cache: KeyCache
    auth: Authenticator

    async def issue(self, **body: object) -> dict[str, object]:
        return await self.admin.create({"name": "ci bot", "org": "acme", **body})

    def sync(self) -> None:
        """One pull of the registry's change feed into the cache (what KeyLink.sync_once does)."""
        changes = self.registry.changes(self.cache.version)
        if changes is not None:
            self.cache.apply(changes.version, changes.records, changes.reset)


def key_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, admin_keys: tuple[str, ...] = ()) -> KeyStack:
    wall, mono = Clock(T0), Clock(100.0)
    fake_time = types.SimpleNamespace(time=wall)
    monkeypatch.setattr(admin_module, "time", fake_time)
    monkeypatch.setattr(authenticator_module, "time", fake_time)
    store = SqliteKeyStore(tmp_path / "keys.db")
    registry = KeyRegistry(store, clock=wall)
    local = LocalRegistry(registry)
    hasher = KeyHasher(PEPPER)
    admin = KeyAdmin(hasher, local, CATALOG, TIERS)
    link = RegistryLink(local)
    cache = KeyCache(link.lookup, hit_s=30.0, miss_s=5.0, clock=mono)
    auth = Authenticator("keys", Audit(), hasher, cache, admin_keys=admin_keys)
    return KeyStack(wall, mono, store, registry, local, link, hasher, admin, cache, auth)
