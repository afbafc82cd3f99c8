"""A replica's link to the key registry actor: the cache's lookups (first sight of a key), the admin operations,
and a background sync that pulls the registry's changes and refreshes hot keys (nothing here per request)."""

from __future__ import annotations

import asyncio
import logging
import time

import ray
from ray.exceptions import RayError

from actors.keys import KeyRegistryActor
from gateway.auth.cache import KeyCache
from gateway.auth.keys import KeyRecord, Rotation, SecretVersion
from gateway.config import AuthConfig

log = logging.getLogger("gateway.auth")
CALL_TIMEOUT_S = 2.0


class KeyLink:
    """Implements gateway.auth.admin.RegistryClient and the KeyCache's lookup over the named actor."""

    def __init__(self, auth: AuthConfig, namespace: str, interval_s: float) -> None:
        self._auth = auth
        self._namespace = namespace
        self._interval = interval_s
        self._handle: ray.actor.ActorHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._warned_at = 0.0
        self.cache: KeyCache | None = None
        self.calls = {"request_path": 0, "background": 0}

    def _actor(self) -> ray.actor.ActorHandle:
        if self._handle is None:
            store_only = self._auth.model_copy(update={"pepper": None, "admin_keys": (), "jwt": None})  # no secrets
            options = {"name": "key_registry", "namespace": self._namespace, "lifetime": "detached"}
            self._handle = KeyRegistryActor.options(**options, get_if_exists=True).remote(store_only)
        return self._handle

    async def _call(self, method: str, *args: object, wait_s: float = CALL_TIMEOUT_S) -> object:
        try:
            return await asyncio.wait_for(getattr(self._actor(), method).remote(*args), wait_s)
        except (RayError, TimeoutError):
            self._handle = None  # looked up again next time (the actor may have been re-created)
            raise

    # --- the cache's lookup (a request's path, first sight of a key) -----------------------------------------
    async def lookup(self, key_id: str) -> KeyRecord | None:
        self.calls["request_path"] += 1
        return await self._call("lookup", key_id)  # type: ignore[return-value]

    # --- admin operations -------------------------------------------------------------------------------------
    async def all(self) -> list[KeyRecord]:
        return await self._call("all")  # type: ignore[return-value]

    async def create(self, record: KeyRecord) -> KeyRecord:
        stored = await self._call("create", record)
        self._install(stored)  # type: ignore[arg-type]
        return stored  # type: ignore[return-value]

    async def rotate(self, key_id: str, secret: SecretVersion, grace_s: float,
                     rotation: Rotation | None) -> KeyRecord | None:  # fmt: skip
        record = await self._call("rotate", key_id, secret, grace_s, rotation)
        self._install(record)  # type: ignore[arg-type]
        return record  # type: ignore[return-value]

    async def revoke(self, key_id: str) -> KeyRecord | None:
        record = await self._call("revoke", key_id)
        self._install(record)  # type: ignore[arg-type]
        return record  # type: ignore[return-value]

    def _install(self, record: KeyRecord | None) -> None:
        """This replica sees its own admin change at once (the others within a sync)."""
        if record is not None and self.cache is not None:
            self.cache.refreshed({record.key_id: record})

    # --- the background sync ----------------------------------------------------------------------------------
    async def ready(self) -> None:
        """At start-up: find or create the actor, so the first request does not wait for it (failures logged)."""
        try:
            await self._call("ready", wait_s=CALL_TIMEOUT_S * 15)
            await self.sync_once()
        except (RayError, TimeoutError) as exc:
            self._trouble("starting the key registry", exc)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="key-registry-sync")

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sync_once()
            except (RayError, TimeoutError) as exc:
                self._trouble("the key sync", exc)
            except Exception as exc:  # never let the sync die: revocations would stop arriving
                log.exception("key registry sync failed")
                self._trouble("the key sync", exc)
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))

    async def sync_once(self) -> None:
        cache = self.cache
        if cache is None:
            return
        self.calls["background"] += 1
        changes = await self._call("changes", cache.version)
        if changes is not None:
            cache.apply(changes.version, changes.records, changes.reset)  # type: ignore[attr-defined]
        due = cache.due()
        if due:
            self.calls["background"] += 1
            cache.refreshed(await self._call("lookup_many", due))  # type: ignore[arg-type]

    def _trouble(self, what: str, exc: BaseException) -> None:
        if time.monotonic() - self._warned_at > 10:
            self._warned_at = time.monotonic()
            log.warning("key registry: %s failed (%s); serving on cached keys", what, type(exc).__name__)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
