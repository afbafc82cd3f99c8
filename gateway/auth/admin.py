"""Issuing, rotating and revoking gateway keys (the admin API's operations): secrets are made and digested here,
shown once, and only their digests reach the registry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.auth.keys import (
    KeyHasher,
    KeyRecord,
    Rotation,
    SecretVersion,
    format_key,
    idempotency_digest,
    new_key_id,
    new_secret,
)
from gateway.auth.registry import KeyRegistry
from gateway.schema import ErrorKind, GatewayError, validation_error
from gateway.schema.limits import LimitSpec
from gateway.schema.principal import Daemon, Scope


class RegistryClient(Protocol):
    """The registry as a replica reaches it (the Ray actor; in-process in tests)."""

    async def lookup(self, key_id: str) -> KeyRecord | None: ...

    async def all(self) -> list[KeyRecord]: ...

    async def create(self, record: KeyRecord) -> KeyRecord: ...

    async def rotate(self, key_id: str, secret: SecretVersion, grace_s: float,
                     rotation: Rotation | None) -> KeyRecord | None: ...  # fmt: skip

    async def revoke(self, key_id: str) -> KeyRecord | None: ...


class LocalRegistry:
    """A RegistryClient over an in-process KeyRegistry (store calls in a thread)."""

    def __init__(self, registry: KeyRegistry) -> None:
        self.registry = registry

    async def lookup(self, key_id: str) -> KeyRecord | None:
        return await asyncio.to_thread(self.registry.lookup, key_id)

    async def all(self) -> list[KeyRecord]:
        return await asyncio.to_thread(self.registry.all)

    async def create(self, record: KeyRecord) -> KeyRecord:
        return await asyncio.to_thread(self.registry.create, record)

    async def rotate(self, key_id: str, secret: SecretVersion, grace_s: float,
                     rotation: Rotation | None) -> KeyRecord | None:  # fmt: skip
        return await asyncio.to_thread(self.registry.rotate, key_id, secret, grace_s, rotation)

    async def revoke(self, key_id: str) -> KeyRecord | None:
        return await asyncio.to_thread(self.registry.revoke, key_id)


class KeyCreate(BaseModel):
    """The body of `POST /v1/gateway/keys`; omitted fields take the safe defaults (no admin, no delegation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    org: str = Field(min_length=1, max_length=200, pattern=r"^[^/\s]+$")
    user: str | None = Field(default=None, min_length=1, max_length=200)
    daemons: tuple[Daemon, ...] = ()
    models: tuple[str, ...] = Field(default=("*",), min_length=1)
    budget_tier: str | None = None
    may_set_user: bool = False
    limits: LimitSpec | None = None  # e.g. {rpm: 60, tpm: 200000}
    scopes: tuple[Scope, ...] = Field(default=("chat", "embeddings"), min_length=1)
    expires_at: float | None = Field(default=None, gt=0)  # Unix seconds
    expires_in_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_expiry(self) -> KeyCreate:
        if self.expires_at is not None and self.expires_in_s is not None:
            raise ValueError("give `expires_at` or `expires_in_s`, not both")
        if self.expires_at is not None and self.expires_at <= time.time():
            raise ValueError("`expires_at` is in the past")
        return self


def _not_found(key_id: str) -> GatewayError:
    return GatewayError(ErrorKind.NOT_FOUND, f"no key with id `{key_id}`", code="key_not_found", param="key_id")


class KeyAdmin:
    def __init__(self, hasher: KeyHasher, registry: RegistryClient, catalog: Iterable[str],
                 tiers: Iterable[str] = ()) -> None:  # fmt: skip
        self._hasher = hasher
        self._registry = registry
        self._catalog = tuple(catalog)
        self._tiers = frozenset(tiers)

    def _parse(self, body: object) -> KeyCreate:
        if not isinstance(body, Mapping):
            raise validation_error("body", "the request body must be a JSON object")
        try:
            spec = KeyCreate.model_validate(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "body"
            raise validation_error(where, err["msg"]) from None
        for i, pattern in enumerate(spec.models):
            if not any(fnmatchcase(m, pattern) for m in self._catalog):
                raise validation_error(f"models.{i}", f"`{pattern}` matches no catalog model")
        if spec.budget_tier is not None and spec.budget_tier not in self._tiers:
            raise validation_error("budget_tier", f"unknown budget tier `{spec.budget_tier}`")
        return spec

    async def create(self, body: object) -> dict[str, object]:
        spec = self._parse(body)
        now = time.time()
        secret = new_secret()
        expires = spec.expires_at if spec.expires_in_s is None else now + spec.expires_in_s
        record = KeyRecord(
            key_id=new_key_id(), name=spec.name, org=spec.org, user=spec.user, daemons=spec.daemons,
            models=spec.models, budget_tier=spec.budget_tier, may_set_user=spec.may_set_user, scopes=spec.scopes,
            limits=spec.limits, expires_at=expires,
            secrets=(SecretVersion(version=1, digest=self._hasher.digest(secret), created_at=now),),
            pepper_id=self._hasher.pepper_id,
        )  # fmt: skip
        stored = await self._registry.create(record)
        return {**stored.public(), "key": format_key(stored.key_id, secret)}

    async def get(self, key_id: str) -> dict[str, object]:
        record = await self._registry.lookup(key_id)
        if record is None:
            raise _not_found(key_id)
        return record.public()

    async def list(self) -> list[dict[str, object]]:
        return [r.public() for r in await self._registry.all()]

    async def rotate(self, key_id: str, grace_s: float, idempotency_key: str | None) -> dict[str, object]:
        """A new secret (shown once); the old ones keep working for `grace_s`. Replayed with the same
        Idempotency-Key, the same new secret comes back and nothing is rotated twice."""
        if not 0 <= grace_s <= 30 * 86_400:
            raise validation_error("grace_s", "between 0 and 2592000 seconds (30 days)")
        now = time.time()
        secret = new_secret()
        version = SecretVersion(version=1, digest=self._hasher.digest(secret), created_at=now)
        rotation = None
        if idempotency_key:
            rotation = Rotation(idempotency=idempotency_digest(idempotency_key, key_id),
                                sealed=self._hasher.seal(secret, idempotency_key, key_id), at=now)  # fmt: skip
        record = await self._registry.rotate(key_id, version, grace_s, rotation)
        if record is None:
            raise _not_found(key_id)
        if record.status != "active":
            raise GatewayError(ErrorKind.BAD_REQUEST, f"key `{key_id}` is revoked; create a new one",
                               code="key_revoked", param="key_id")  # fmt: skip
        if rotation is not None:  # this rotation, or the one an earlier call with this Idempotency-Key made
            done = next(r for r in record.rotations if r.idempotency == rotation.idempotency)
            try:
                secret = self._hasher.unseal(done.sealed, idempotency_key or "", key_id)
            except UnicodeDecodeError:  # sealed under another pepper: this replay cannot show the secret
                raise GatewayError(ErrorKind.BAD_REQUEST, "this Idempotency-Key's rotation cannot be replayed here "
                                   "(the key pepper changed since); rotate with a new Idempotency-Key",
                                   code="idempotency_conflict", param="idempotency-key") from None  # fmt: skip
            current = done.version
        else:
            current = max(v.version for v in record.secrets)
        return {**record.public(), "key": format_key(key_id, secret), "secret_version": current}

    async def revoke(self, key_id: str) -> dict[str, object]:
        record = await self._registry.revoke(key_id)
        if record is None:
            raise _not_found(key_id)
        return record.public()
