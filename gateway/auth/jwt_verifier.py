"""JWT / OIDC callers: verify a bearer token against the issuer's JWKS and map its claims to a JwtIdentity."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, get_args

import jwt

from gateway.config import JwtConfig
from gateway.schema.errors import unauthenticated
from gateway.schema.principal import Daemon, Scope

log = logging.getLogger("gateway.auth.jwt")

REFETCH_INTERVAL_S = 10.0  # at most one JWKS refetch for an unknown `kid` per this many seconds
FAILED_RETRY_S = 2.0  # after a failed JWKS read, serve the keys we have (or refuse) this long before reading again
FETCH_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 1 << 20
MAX_TOKEN_CHARS = 16 * 1024
CACHE_TTL_S = 60.0  # a verified token is trusted without re-checking its signature at most this long (never past exp)
CACHE_SIZE = 4096

_DAEMONS: frozenset[str] = frozenset(get_args(Daemon))
_SCOPES: frozenset[str] = frozenset(get_args(Scope))
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}  # algorithm prefix -> the JWK kty it needs


@dataclass(frozen=True)
class JwtIdentity:
    """Who a verified token says the caller is; `key_id` is the stable, loggable id budgets and audit hang off."""

    subject: str
    issuer: str
    org: str
    user: str | None
    daemons: tuple[Daemon, ...]
    models: tuple[str, ...]
    scopes: tuple[Scope, ...]
    budget_tier: str | None
    expires_at: float  # Unix seconds

    @property
    def key_id(self) -> str:
        digest = hashlib.sha256(json.dumps([self.issuer, self.subject]).encode()).hexdigest()
        return "jwt:" + digest[:20]


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments whose first decodes to a JSON object with an `alg` (a gateway key has no dots)."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1] or len(parts[0]) > 4096:
        return False
    if not all(set(part) <= _B64URL for part in parts):
        return False
    try:
        header = json.loads(_b64decode(parts[0]))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


def default_fetch(url: str) -> bytes:
    """Read a JWKS URL (http or https only), with a timeout and a size cap. Blocking: call it in a thread."""
    if not url.startswith(("https://", "http://")):
        raise ValueError("jwks_url must be http(s)")
    request = urllib.request.Request(url, headers={"accept": "application/json"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:
        body: bytes = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError("JWKS larger than 1 MiB")
    return body


def _parse_jwks(body: bytes) -> dict[str | None, dict[str, Any]]:
    """kid -> JWK for the usable asymmetric signing keys of a JWKS document (symmetric `oct` keys are dropped)."""
    document = json.loads(body)
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWKS document (no `keys` list)")
    keys: dict[str | None, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            jwt.PyJWK(entry)  # validates the key material once; bound to an algorithm per verification below
        except jwt.PyJWTError as error:
            log.warning("JWKS: skipping unusable key %r: %s", entry.get("kid"), type(error).__name__)
            continue
        kid = entry.get("kid")
        keys[kid if isinstance(kid, str) else None] = entry
    if not keys:
        raise ValueError("JWKS has no usable asymmetric signing keys")
    return keys


def _list_claim(payload: dict[str, Any], name: str) -> tuple[str, ...] | None:
    """A list claim as a JSON array of strings or a space-separated string; None when absent."""
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise unauthenticated(f"malformed {name} claim")


def _str_claim(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None or (isinstance(value, str) and value):
        return value
    raise unauthenticated(f"malformed {name} claim")


class JwtVerifier:
    """Verifies tokens of one issuer. The JWKS is read lazily, cached `jwks_cache_s`, and re-read once (throttled,
    shared by concurrent callers) when a token names an unknown `kid`. `fetch(url) -> bytes` replaces the HTTP read
    of `jwks_url`; every read runs in a thread."""

    def __init__(self, config: JwtConfig, fetch: Callable[[str], bytes] | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._config = config
        self._fetch = fetch or default_fetch
        self._clock = clock
        self._lock = asyncio.Lock()
        self._keys: dict[str | None, dict[str, Any]] | None = None
        self._bound: dict[tuple[str | None, str], jwt.PyJWK] = {}
        self._generation = 0  # bumped by every successful read
        self._fresh_until = 0.0  # monotonic: the cached JWKS is used without re-reading until then
        self._last_refetch = float("-inf")  # monotonic: the last read caused by an unknown kid
        self._retry_at = float("-inf")  # monotonic: after a failed read, no new read before this
        self._refresh: asyncio.Task[None] | None = None  # a background re-read of a JWKS past jwks_cache_s
        self._verified: OrderedDict[bytes, tuple[JwtIdentity, float]] = OrderedDict()
        self.jwks_reads = 0  # attempted JWKS reads, for metrics and tests

    async def verify(self, token: str) -> JwtIdentity:
        """The identity a valid token proves; else `unauthenticated(reason)` (401), a reason never holding the token."""
        if len(token) > MAX_TOKEN_CHARS:
            raise unauthenticated("malformed token (too long)")
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cached(digest)
        if cached is not None:
            return cached
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthenticated("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._config.algorithms:
            raise unauthenticated("algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise unauthenticated("malformed token (kid)")
        key = await self._signing_key(kid, alg)
        payload = self._decode(token, key, alg)
        identity = self._identity(payload)
        self._remember(digest, identity)
        return identity

    # -- verified-token cache -------------------------------------------------------------------------------------

    def _cached(self, digest: bytes) -> JwtIdentity | None:
        hit = self._verified.get(digest)
        if hit is None:
            return None
        identity, until = hit
        if self._clock() < until and time.time() < identity.expires_at:
            self._verified.move_to_end(digest)
            return identity
        del self._verified[digest]
        return None

    def _remember(self, digest: bytes, identity: JwtIdentity) -> None:
        if identity.expires_at <= time.time():
            return  # accepted only thanks to the leeway: never cached
        self._verified[digest] = (identity, self._clock() + CACHE_TTL_S)
        while len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)

    # -- signature and claims ----------------------------------------------------------------------------------------

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        config = self._config
        try:
            payload: dict[str, Any] = jwt.decode(
                token, key, algorithms=[alg], audience=config.audience, issuer=config.issuer, leeway=config.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_signature": True},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise unauthenticated("token expired") from None
        except jwt.ImmatureSignatureError:
            raise unauthenticated("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise unauthenticated("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise unauthenticated("wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise unauthenticated("bad signature") from None
        except jwt.MissingRequiredClaimError as error:
            raise unauthenticated(f"missing {error.claim} claim") from None
        except jwt.InvalidAlgorithmError:
            raise unauthenticated("algorithm not allowed") from None
        except jwt.InvalidKeyError:
            raise unauthenticated("signing key does not match algorithm") from None
        except jwt.DecodeError:
            raise unauthenticated("malformed token") from None
        except jwt.PyJWTError as error:  # InvalidIssuedAtError, InvalidSubjectError, ...
            raise unauthenticated(f"invalid token ({type(error).__name__})") from None
        return payload

    def _identity(self, payload: dict[str, Any]) -> JwtIdentity:
        claims = self._config.claims
        org = payload.get(claims.org)
        if org is None or org == "":
            raise unauthenticated("missing org claim")
        if not isinstance(org, str):
            raise unauthenticated("malformed org claim")
        daemons = _list_claim(payload, claims.daemons) or ()
        models = _list_claim(payload, claims.models)
        scopes = _list_claim(payload, claims.scopes)
        granted: tuple[str, ...]
        if scopes is None:  # the configured default, which never grants admin: only a claim does
            granted = tuple(s for s in self._config.default_scopes if s != "admin")
        else:  # other OAuth scopes (openid, email, ...) are not the gateway's
            granted = tuple(dict.fromkeys(s for s in scopes if s in _SCOPES))
        return JwtIdentity(
            subject=payload["sub"],
            issuer=payload["iss"],
            org=org,
            user=_str_claim(payload, claims.user),
            daemons=cast(tuple[Daemon, ...], tuple(dict.fromkeys(d for d in daemons if d in _DAEMONS))),
            models=("*",) if models is None else models,
            scopes=cast(tuple[Scope, ...], granted),
            budget_tier=_str_claim(payload, claims.budget_tier),
            expires_at=float(payload["exp"]),
        )

    # -- keys -------------------------------------------------------------------------------------------------------

    async def _signing_key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        keys = await self._current_keys()
        entry = self._pick(keys, kid)
        if entry is None:
            keys = await self._refetch(self._generation)
            entry = self._pick(keys, kid)
            if entry is None:
                raise unauthenticated("unknown signing key")
        return self._bind(kid, entry, alg)

    @staticmethod
    def _pick(keys: dict[str | None, dict[str, Any]], kid: str | None) -> dict[str, Any] | None:
        if kid is None:  # a token without a kid is accepted only when the set has one key
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    def _bind(self, kid: str | None, entry: dict[str, Any], alg: str) -> jwt.PyJWK:
        """The key as a PyJWK bound to `alg`, refused when the JWK names another algorithm or is of another type."""
        bound = self._bound.get((kid, alg))
        if bound is not None:
            return bound
        declared = entry.get("alg")
        if (declared is not None and declared != alg) or _KEY_TYPES.get(alg[:2]) != entry.get("kty"):
            raise unauthenticated("signing key does not match algorithm")
        try:
            bound = jwt.PyJWK(entry, algorithm=alg)
        except jwt.PyJWTError:
            raise unauthenticated("signing key does not match algorithm") from None
        self._bound[(kid, alg)] = bound
        return bound

    async def _current_keys(self) -> dict[str | None, dict[str, Any]]:
        """The cached keys; the first call waits for the read, later ones re-read past jwks_cache_s in the background
        (serving the cached keys meanwhile, so a slow or failing JWKS endpoint never stalls verification)."""
        if self._keys is None:
            async with self._lock:
                if self._keys is None:
                    await self._read()
            if self._keys is None:
                raise unauthenticated("signing keys unavailable")
        elif self._clock() >= self._fresh_until and self._refresh is None:
            self._refresh = asyncio.create_task(self._background_read())
        return self._keys

    async def _background_read(self) -> None:
        try:
            async with self._lock:
                if self._clock() >= self._fresh_until:
                    await self._read()
        finally:
            self._refresh = None

    async def _refetch(self, seen: int) -> dict[str | None, dict[str, Any]]:
        """Re-read the JWKS for an unknown kid, unless another caller just did or one did within the throttle window."""
        async with self._lock:
            now = self._clock()
            if self._generation == seen and now - self._last_refetch >= REFETCH_INTERVAL_S:
                self._last_refetch = now
                await self._read()
        if self._keys is None:  # not reached: _current_keys loaded them and a failed read keeps them
            raise unauthenticated("signing keys unavailable")
        return self._keys

    async def _read(self) -> None:
        """Read and parse the JWKS in a thread; on failure keep the keys we have. Call with the lock held."""
        if self._clock() < self._retry_at:
            return
        config = self._config
        self.jwks_reads += 1
        try:
            if config.jwks_file is not None:
                body = await asyncio.to_thread(Path(config.jwks_file).read_bytes)
            else:
                assert config.jwks_url is not None
                body = await asyncio.to_thread(self._fetch, config.jwks_url)
            keys = await asyncio.to_thread(_parse_jwks, body)
        except Exception as error:  # a file or endpoint outside our control: any failure keeps the cached keys
            self._retry_at = self._clock() + FAILED_RETRY_S
            if self._keys is not None:
                self._fresh_until = self._retry_at
            log.warning("JWKS for %s unreadable (%s: %s); %s", config.issuer, type(error).__name__, error,
                        "keeping the cached keys" if self._keys is not None else "refusing JWT callers")  # fmt: skip
            return
        self._keys = keys
        self._bound = {}
        self._generation += 1
        self._fresh_until = self._clock() + config.jwks_cache_s
