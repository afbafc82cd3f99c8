"""Authentication on a replica: the bearer credential (gateway key, bootstrap admin key or JWT) → a Principal, from
the local key cache in the common case; every decision is an audit event."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.auth.audit import Audit
from gateway.auth.cache import Entry, KeyCache, RegistryUnavailable
from gateway.auth.keys import KeyHasher, KeyRecord, parse_key
from gateway.schema import ErrorKind, GatewayError, forbidden, unauthenticated
from gateway.schema.principal import ALL_SCOPES, OPEN, Principal, Scope

if TYPE_CHECKING:
    from gateway.auth.jwt_verifier import JwtVerifier

RECHECK_S = 1.0


def bearer(headers: Mapping[str, str]) -> str | None:
    """The credential: `Authorization: Bearer ...` (OpenAI SDKs, curl) or `x-api-key` (Anthropic SDKs)."""
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None
    key = headers.get("x-api-key")
    return key.strip() or None if key is not None else None


def principal_of(record: KeyRecord) -> Principal:
    return Principal(key_id=record.key_id, via="key", org=record.org, user=record.user, daemons=record.daemons,
                     models=record.models, scopes=record.scopes, budget_tier=record.budget_tier,
                     may_set_user=record.may_set_user, name=record.name, limits=record.limits)  # fmt: skip


def admin_key_id(key: str) -> str:
    """The public id of a bootstrap admin key: its own id if it is a gateway key, else a fingerprint."""
    parsed = parse_key(key)
    return parsed[0] if parsed else "admin-" + hashlib.sha256(key.encode()).hexdigest()[:10]


class Authenticator:
    """`keys` mode: gateway keys (+ bootstrap admin keys, + JWTs when configured); `open` mode: anyone, as OPEN."""

    def __init__(self, mode: str, audit: Audit, hasher: KeyHasher | None = None, cache: KeyCache | None = None,
                 admin_keys: tuple[str, ...] = (), jwt: JwtVerifier | None = None) -> None:  # fmt: skip
        if mode == "keys" and (hasher is None or cache is None):
            raise ValueError("keys mode needs a pepper and a key cache")
        self.mode = mode
        self.audit = audit
        self._hasher = hasher
        self.cache = cache
        self._jwt = jwt
        # bootstrap admin keys: digest -> id (the values themselves are not kept)
        self._admin = {hasher.digest(k): admin_key_id(k) for k in admin_keys} if hasher else {}
        self._principals: dict[tuple[str, int], Principal] = {}  # (key id, revision) -> its principal

    async def authenticate(self, headers: Mapping[str, str], route: str, scope: Scope | None) -> Principal:
        """The caller's principal, with `scope` checked; 401 / 403 otherwise (both audited)."""
        if self.mode == "open":
            return OPEN
        token = bearer(headers)
        try:
            principal = await self._identify(token)
        except GatewayError as exc:
            parsed = parse_key(token) if token else None
            self.audit.deny(route, exc, key_id=parsed[0] if parsed else None)
            raise
        if scope is not None and not principal.has_scope(scope):
            err = (forbidden("admin_required", "this endpoint needs a key with the `admin` scope") if scope == "admin"
                   else forbidden("scope_not_allowed", f"this key lacks the `{scope}` scope"))  # fmt: skip
            self.audit.deny(route, err, principal)
            raise err
        self.audit.allow(route, principal)
        return principal

    async def _identify(self, token: str | None) -> Principal:
        if token is None:
            raise unauthenticated("no API key: send `Authorization: Bearer <gateway key>`")
        parsed = parse_key(token)
        if parsed is None:
            if self._jwt is not None and token.count(".") == 2:
                return await self._from_jwt(token)
            return self._bootstrap(token) or _malformed()
        key_id, secret = parsed
        assert self.cache is not None and self._hasher is not None
        entry = self.cache.fresh(key_id)
        try:
            record = entry.record if entry is not None else await self.cache.fetch(key_id)
        except RegistryUnavailable:
            raise GatewayError(ErrorKind.OVERLOADED, "the key registry cannot be reached; try again",
                               code="auth_unavailable", retry_after=1) from None  # fmt: skip
        if record is None:
            return self._bootstrap(token) or _unknown()
        now = time.time()
        if self._hasher.matches(record, secret, now) is None:
            record = await self._recheck(key_id, entry)
            if record is None or self._hasher.matches(record, secret, now) is None:
                raise unauthenticated("invalid API key (unknown, or a rotated-out secret past its grace period)")
        if (why := record.usable_at(now)) is not None:
            raise unauthenticated(why)
        return self._principal(record)

    async def _recheck(self, key_id: str, cached: Entry | None) -> KeyRecord | None:
        """The record again, if the one checked came from the cache: a secret it does not know may be one a
        rotation on another replica just made (throttled per key by the cache)."""
        assert self.cache is not None
        if cached is None or not self.cache.may_recheck(key_id, RECHECK_S):
            return None
        try:
            return await self.cache.fetch(key_id)
        except RegistryUnavailable:
            return None

    def _principal(self, record: KeyRecord) -> Principal:
        slot = (record.key_id, record.revision)
        principal = self._principals.get(slot)
        if principal is None:
            if len(self._principals) > 50_000:
                self._principals.clear()
            principal = self._principals[slot] = principal_of(record)
        return principal

    def _bootstrap(self, token: str) -> Principal | None:
        if not self._admin:
            return None
        assert self._hasher is not None
        digest = self._hasher.digest(token)
        for known, key_id in self._admin.items():
            if hmac.compare_digest(known, digest):
                return Principal(key_id=key_id, via="admin_key", org=None, scopes=("admin",), name="bootstrap admin")
        return None

    async def _from_jwt(self, token: str) -> Principal:
        assert self._jwt is not None  # only called when JWTs are configured (_identify)
        identity = await self._jwt.verify(token)
        scopes = tuple(s for s in identity.scopes if s in ALL_SCOPES)
        return Principal(key_id=identity.key_id, via="jwt", org=identity.org, user=identity.user,
                         daemons=identity.daemons, models=identity.models, scopes=scopes,
                         budget_tier=identity.budget_tier, name=identity.subject)  # fmt: skip


def _malformed() -> Principal:
    raise unauthenticated("malformed API key (gateway keys look like gwk_<key id>_<secret>)")


def _unknown() -> Principal:
    raise unauthenticated("invalid API key (unknown key id)")
