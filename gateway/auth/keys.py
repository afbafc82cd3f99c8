"""Gateway API keys: the `gwk_<key_id>_<secret>` format, peppered HMAC digests, and the key record."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.schema.limits import LimitSpec
from gateway.schema.principal import Daemon, Scope

Status = Literal["active", "revoked"]
PREFIX = "gwk_"
_KEY = re.compile(r"^gwk_([a-z0-9]{8,32})_([A-Za-z0-9_-]{43,128})$")
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
SECRET_BYTES = 32  # 256 bits


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SecretVersion(_Frozen):
    """One secret of a key, stored only as its digest; a rotated-out secret works until `expires_at`."""

    version: int = Field(ge=1)
    digest: str  # hex HMAC-SHA256(pepper, secret)
    created_at: float
    expires_at: float | None = None


class Rotation(_Frozen):
    """A rotation done under an Idempotency-Key: a replay returns the same new secret, which is kept only sealed
    with a pad derived from the pepper and that Idempotency-Key (neither is stored)."""

    idempotency: str  # hex SHA-256 of the Idempotency-Key
    version: int = 0  # the secret version it made (set by the registry)
    sealed: str  # hex: the new secret XOR HMAC(pepper, idempotency key | key id)
    at: float


class KeyRecord(_Frozen):
    """Everything the gateway knows of one key. The key id is public and stable across rotations: budgets, limits
    and audit hang off it."""

    key_id: str
    name: str = Field(min_length=1, max_length=200)
    org: str = Field(min_length=1, max_length=200)
    user: str | None = None
    daemons: tuple[Daemon, ...] = ()  # the daemons it may act as (none: it names no daemon)
    models: tuple[str, ...] = ("*",)  # globs over catalog names
    budget_tier: str | None = None
    limits: LimitSpec | None = None  # the key's own rate limits (gateway.limits)
    may_set_user: bool = False  # a service key that calls on behalf of end users (x-gateway-user)
    scopes: tuple[Scope, ...] = ("chat", "embeddings")
    expires_at: float | None = None  # Unix seconds
    status: Status = "active"
    secrets: tuple[SecretVersion, ...] = ()
    rotations: tuple[Rotation, ...] = ()  # recent idempotent rotations (a day)
    created_at: float = 0.0
    revision: int = 0  # bumped by every write (the stores' conditional writes compare it)
    pepper_id: str = ""  # which pepper the digests were made with (a fingerprint, not the pepper)

    def public(self) -> dict[str, object]:
        """The record as the admin API shows it: never a digest or a sealed secret."""
        body = self.model_dump(mode="json", exclude={"secrets", "rotations", "pepper_id"})
        body["secret_versions"] = [
            {"version": s.version, "created_at": s.created_at, "expires_at": s.expires_at} for s in self.secrets
        ]
        return body

    def usable_at(self, now: float) -> str | None:
        """Why the key cannot be used now (revoked, expired), or None."""
        if self.status != "active":
            return "the key has been revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "the key has expired"
        return None


def new_key_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)  # 43 characters


def format_key(key_id: str, secret: str) -> str:
    return f"{PREFIX}{key_id}_{secret}"


def parse_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _KEY.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


class KeyHasher:
    """Digests and checks secrets with the server-side pepper (HMAC-SHA256; compared in constant time)."""

    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < 16:
            raise ValueError("the key pepper must be at least 16 bytes")
        self._pepper = pepper
        self.pepper_id = hmac.new(pepper, b"llm-gateway pepper id", hashlib.sha256).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"KeyHasher(pepper_id={self.pepper_id!r})"

    def digest(self, secret: str) -> str:
        return hmac.new(self._pepper, secret.encode(), hashlib.sha256).hexdigest()

    def matches(self, record: KeyRecord, secret: str, now: float | None = None) -> SecretVersion | None:
        """The secret version `secret` is (if it is still valid). Every version is compared, in constant time."""
        now = time.time() if now is None else now
        digest = self.digest(secret)
        found = None
        for version in record.secrets:
            if hmac.compare_digest(version.digest, digest) and (version.expires_at is None or now < version.expires_at):
                found = version
        return found

    def _pad(self, idempotency_key: str, key_id: str, length: int) -> bytes:
        """A one-time pad for one sealed secret (one per key and Idempotency-Key): HMAC blocks with a counter."""
        label = f"rotate|{idempotency_key}|{key_id}|".encode()
        blocks = (hmac.new(self._pepper, label + bytes([i]), hashlib.sha256).digest() for i in range(length // 32 + 1))
        return b"".join(blocks)[:length]

    def seal(self, secret: str, idempotency_key: str, key_id: str) -> str:
        raw = secret.encode()
        pad = self._pad(idempotency_key, key_id, len(raw))
        return bytes(a ^ b for a, b in zip(raw, pad, strict=True)).hex()

    def unseal(self, sealed: str, idempotency_key: str, key_id: str) -> str:
        raw = bytes.fromhex(sealed)
        pad = self._pad(idempotency_key, key_id, len(raw))
        return bytes(a ^ b for a, b in zip(raw, pad, strict=True)).decode()


def idempotency_digest(idempotency_key: str, key_id: str) -> str:
    return hashlib.sha256(f"{key_id}|{idempotency_key}".encode()).hexdigest()
