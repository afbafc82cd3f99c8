"""Authentication on a replica, without Ray: real keys issued by KeyAdmin into a SQLite-backed registry, checked by
an Authenticator over the replica's cache. Every refusal is a 401 `invalid_api_key` (or a 403 for a missing scope)
that never echoes the token; the common case makes no registry call; a rotation made elsewhere lets the new secret in
(throttled re-check); the change feed makes a revocation bite at once; every decision is one audit event."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.auth.admin import KeyAdmin, LocalRegistry
from gateway.auth.audit import Audit
from gateway.auth.authenticator import RECHECK_S, Authenticator, bearer
from gateway.auth.cache import KeyCache
from gateway.auth.keys import KeyRecord, SecretVersion, format_key, new_key_id, new_secret
from gateway.schema import ErrorKind, GatewayError
from gateway.schema.principal import OPEN, Principal
from tests.unit.auth_support import CATALOG, T0, KeyStack, bearer_headers, key_stack, secret_of

ADMIN_KEY = "bootstrap-" + secrets.token_urlsafe(32)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyStack]:
    keys = key_stack(tmp_path, monkeypatch, admin_keys=(ADMIN_KEY,))
    yield keys
    keys.store.close()


class AuditLog:
    """The `gateway.audit` events as they are logged."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def events(self) -> list[dict[str, object]]:
        return [json.loads(r.getMessage()) for r in self._caplog.records if r.name == "gateway.audit"]

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self._caplog.records)


@pytest.fixture
def audit_log(caplog: pytest.LogCaptureFixture) -> AuditLog:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    return AuditLog(caplog)


async def _refused(stack: KeyStack, headers: dict[str, str], scope: str | None = "chat") -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await stack.auth.authenticate(headers, "chat.completions", scope)  # type: ignore[arg-type]
    return info.value


def _assert_401(err: GatewayError, *hidden: str) -> None:
    assert err.kind is ErrorKind.UNAUTHENTICATED and err.status_code == 401 and err.code == "invalid_api_key"
    for text in hidden:
        assert text not in err.message and text not in str(err)


# --- a good key ----------------------------------------------------------------------------------------------------


async def test_a_good_key_yields_the_principal_of_its_record(stack: KeyStack) -> None:
    made = await stack.issue(name="executor svc", user="svc-1", daemons=["executor", "evaluator"],
                             models=["claude-*", "gpt-4o-mini"], scopes=["chat"], budget_tier="gold",
                             may_set_user=True)  # fmt: skip
    principal = await stack.auth.authenticate(bearer_headers(str(made["key"])), "chat.completions", "chat")
    assert principal == Principal(key_id=str(made["key_id"]), via="key", org="acme", user="svc-1",
                                  daemons=("executor", "evaluator"), models=("claude-*", "gpt-4o-mini"),
                                  scopes=("chat",), budget_tier="gold", may_set_user=True,
                                  name="executor svc")  # fmt: skip
    assert not principal.is_open


async def test_x_api_key_works_like_a_bearer_token(stack: KeyStack) -> None:
    made = await stack.issue()
    key = str(made["key"])
    via_bearer = await stack.auth.authenticate(bearer_headers(key), "messages", "chat")
    via_x_api_key = await stack.auth.authenticate({"x-api-key": key}, "messages", "chat")
    assert via_bearer == via_x_api_key and via_bearer.key_id == made["key_id"]
    assert (await stack.auth.authenticate({"authorization": f"bearer   {key}  "}, "messages", "chat")) == via_bearer


def test_bearer_reads_the_authorization_header_or_x_api_key() -> None:
    assert bearer({"authorization": "Bearer tok"}) == "tok"
    assert bearer({"authorization": "BEARER tok"}) == "tok"
    assert bearer({"x-api-key": " tok "}) == "tok"
    assert bearer({}) is None
    assert bearer({"authorization": "Bearer "}) is None
    assert bearer({"authorization": "Basic dXNlcjpwYXNz"}) is None  # not a bearer credential
    assert bearer({"x-api-key": ""}) is None


# --- refusals ------------------------------------------------------------------------------------------------------


async def test_a_missing_credential_is_401(stack: KeyStack) -> None:
    for headers in ({}, {"authorization": "Bearer "}, {"x-api-key": "  "}, {"authorization": "Basic abc"}):
        _assert_401(await _refused(stack, headers))


async def test_a_malformed_token_is_401_without_echoing_it(stack: KeyStack) -> None:
    for token in ("sk-" + "x" * 48, "gwk_short_" + "y" * 43, "gwk_abcd1234_tooshort", "not a key at all"):
        err = await _refused(stack, bearer_headers(token))
        _assert_401(err, token)
        assert "malformed" in err.message
    assert stack.cache.lookups == 0  # a malformed token never reaches the registry


async def test_an_unknown_key_id_is_401_and_the_miss_is_cached(stack: KeyStack) -> None:
    token = format_key(new_key_id(), new_secret())
    for _ in range(3):
        err = await _refused(stack, bearer_headers(token))
        _assert_401(err, token, token[4:])
    assert stack.cache.lookups == 1  # repeated unknown keys are answered from the cached miss


async def test_a_wrong_secret_is_401_without_echoing_it(stack: KeyStack) -> None:
    made = await stack.issue()
    wrong = new_secret()
    err = await _refused(stack, bearer_headers(format_key(str(made["key_id"]), wrong)))
    _assert_401(err, wrong, secret_of(str(made["key"])))


async def test_a_revoked_key_is_401(stack: KeyStack) -> None:
    made = await stack.issue()
    await stack.admin.revoke(str(made["key_id"]))
    err = await _refused(stack, bearer_headers(str(made["key"])))
    _assert_401(err, str(made["key"]))
    assert "revoked" in err.message


async def test_an_expired_key_is_401(stack: KeyStack) -> None:
    made = await stack.issue(expires_in_s=60)
    headers = bearer_headers(str(made["key"]))
    stack.wall.advance(59)
    assert (await stack.auth.authenticate(headers, "chat.completions", "chat")).key_id == made["key_id"]
    stack.wall.advance(1)
    err = await _refused(stack, headers)
    _assert_401(err, str(made["key"]))
    assert "expired" in err.message


async def test_a_key_whose_record_expired_in_the_past_is_401(stack: KeyStack) -> None:
    secret = new_secret()
    version = SecretVersion(version=1, digest=stack.hasher.digest(secret), created_at=T0 - 100)
    record = KeyRecord(key_id=new_key_id(), name="old", org="acme", expires_at=T0 - 1, secrets=(version,))
    await stack.local.create(record)
    err = await _refused(stack, bearer_headers(format_key(record.key_id, secret)))
    _assert_401(err, secret)
    assert "expired" in err.message


async def test_a_rotated_out_secret_works_until_its_grace_ends(stack: KeyStack) -> None:
    made = await stack.issue()
    old, key_id = str(made["key"]), str(made["key_id"])
    rotated = await stack.admin.rotate(key_id, 60, None)
    new = str(rotated["key"])
    assert (await stack.auth.authenticate(bearer_headers(old), "chat.completions", "chat")).key_id == key_id
    assert (await stack.auth.authenticate(bearer_headers(new), "chat.completions", "chat")).key_id == key_id
    stack.wall.advance(60)  # the grace period is over (wall clock of the registry and the authenticator)
    _assert_401(await _refused(stack, bearer_headers(old)), old)
    stack.mono.advance(60)  # and after the cache has re-read the record, too
    _assert_401(await _refused(stack, bearer_headers(old)), old)
    assert (await stack.auth.authenticate(bearer_headers(new), "chat.completions", "chat")).key_id == key_id


async def test_the_registry_unreachable_is_503_not_401(stack: KeyStack) -> None:
    made = await stack.issue()
    stack.link.down = True
    with pytest.raises(GatewayError) as info:
        await stack.auth.authenticate(bearer_headers(str(made["key"])), "chat.completions", "chat")
    err = info.value
    assert err.kind is ErrorKind.OVERLOADED and err.status_code == 503
    assert err.code == "auth_unavailable" and err.retry_after == 1
    assert str(made["key"]) not in err.message


async def test_a_known_key_keeps_working_from_a_stale_record_while_the_registry_is_down(stack: KeyStack) -> None:
    made = await stack.issue()
    headers = bearer_headers(str(made["key"]))
    await stack.auth.authenticate(headers, "chat.completions", "chat")
    stack.mono.advance(3_600)  # long past hit_s
    stack.link.down = True
    assert (await stack.auth.authenticate(headers, "chat.completions", "chat")).key_id == made["key_id"]


# --- scopes and the bootstrap admin key ----------------------------------------------------------------------------


async def test_a_missing_scope_is_403(stack: KeyStack) -> None:
    made = await stack.issue(scopes=["embeddings"])
    headers = bearer_headers(str(made["key"]))
    err = await _refused(stack, headers, "chat")
    assert err.kind is ErrorKind.FORBIDDEN and err.status_code == 403 and err.code == "scope_not_allowed"
    assert "`chat`" in err.message
    err = await _refused(stack, headers, "admin")
    assert err.kind is ErrorKind.FORBIDDEN and err.code == "admin_required"
    assert (await stack.auth.authenticate(headers, "embeddings", "embeddings")).key_id == made["key_id"]
    assert (await stack.auth.authenticate(headers, "models", None)).key_id == made["key_id"]  # any caller


async def test_the_bootstrap_admin_key_is_an_admin_only_principal(stack: KeyStack) -> None:
    principal = await stack.auth.authenticate(bearer_headers(ADMIN_KEY), "keys.create", "admin")
    assert principal.via == "admin_key" and principal.scopes == ("admin",) and principal.org is None
    assert principal.key_id.startswith("admin-") and ADMIN_KEY not in principal.key_id
    err = await _refused(stack, bearer_headers(ADMIN_KEY), "chat")
    assert err.kind is ErrorKind.FORBIDDEN and err.code == "scope_not_allowed"
    _assert_401(await _refused(stack, bearer_headers(ADMIN_KEY + "x"), "admin"), ADMIN_KEY)
    assert stack.cache.lookups == 0  # not a gateway key: the registry is not asked


async def test_a_bootstrap_admin_key_in_the_gateway_key_format_is_known_by_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin_key = format_key(new_key_id(), new_secret())
    keys = key_stack(tmp_path, monkeypatch, admin_keys=(admin_key,))
    principal = await keys.auth.authenticate(bearer_headers(admin_key), "keys.list", "admin")
    assert principal.via == "admin_key" and principal.key_id == admin_key[4:20]
    keys.store.close()


# --- the cache on the request path ---------------------------------------------------------------------------------


async def test_a_second_authentication_of_a_key_makes_no_registry_call(stack: KeyStack) -> None:
    made = await stack.issue()
    headers = bearer_headers(str(made["key"]))
    first = await stack.auth.authenticate(headers, "chat.completions", "chat")
    assert stack.cache.lookups == 1
    for _ in range(20):
        again = await stack.auth.authenticate(headers, "chat.completions", "chat")
    assert stack.cache.lookups == 1
    assert again is first  # one principal per key revision, reused


async def test_a_rotation_made_elsewhere_lets_the_new_secret_in_at_once(stack: KeyStack) -> None:
    made = await stack.issue()
    key_id = str(made["key_id"])
    await stack.auth.authenticate(bearer_headers(str(made["key"])), "chat.completions", "chat")  # cached
    elsewhere = KeyAdmin(stack.hasher, LocalRegistry(stack.registry), CATALOG)  # another replica's admin call
    rotated = await elsewhere.rotate(key_id, 60, None)
    principal = await stack.auth.authenticate(bearer_headers(str(rotated["key"])), "chat.completions", "chat")
    assert principal.key_id == key_id
    assert stack.cache.lookups == 2  # one re-check of the record
    assert (
        await stack.auth.authenticate(bearer_headers(str(made["key"])), "chat.completions", "chat")
    ).key_id == key_id


async def test_rechecks_for_unknown_secrets_are_throttled_per_key(stack: KeyStack) -> None:
    made = await stack.issue()
    key_id = str(made["key_id"])
    await stack.auth.authenticate(bearer_headers(str(made["key"])), "chat.completions", "chat")
    for _ in range(10):  # wrong secrets in a burst: at most one registry call
        _assert_401(await _refused(stack, bearer_headers(format_key(key_id, new_secret()))))
    assert stack.cache.lookups == 2
    elsewhere = KeyAdmin(stack.hasher, LocalRegistry(stack.registry), CATALOG)
    rotated = await elsewhere.rotate(key_id, 60, None)
    newest = bearer_headers(str(rotated["key"]))
    _assert_401(await _refused(stack, newest))  # inside the throttle window: the cached record is all there is
    assert stack.cache.lookups == 2
    stack.mono.advance(RECHECK_S)
    assert (await stack.auth.authenticate(newest, "chat.completions", "chat")).key_id == key_id
    assert stack.cache.lookups == 3


async def test_the_change_feed_makes_a_revocation_bite_before_the_ttl(stack: KeyStack) -> None:
    made = await stack.issue()
    headers = bearer_headers(str(made["key"]))
    stack.sync()  # the replica's first sync
    await stack.auth.authenticate(headers, "chat.completions", "chat")
    await stack.admin.revoke(str(made["key_id"]))
    lookups = stack.cache.lookups
    stack.sync()  # the next background pull (no clock moves: the cached record is well within hit_s)
    err = await _refused(stack, headers)
    _assert_401(err, str(made["key"]))
    assert "revoked" in err.message
    assert stack.cache.lookups == lookups  # known from the feed, not asked for


# --- audit -------------------------------------------------------------------------------------------------------


async def test_every_decision_is_one_audit_event_without_the_secret(stack: KeyStack, audit_log: AuditLog) -> None:
    made = await stack.issue(scopes=["chat"], user="alice")
    key, key_id = str(made["key"]), str(made["key_id"])
    wrong = format_key(key_id, new_secret())
    await stack.auth.authenticate(bearer_headers(key), "chat.completions", "chat")
    await stack.auth.authenticate(bearer_headers(key), "chat.completions", "chat")
    await _refused(stack, bearer_headers(wrong))
    await _refused(stack, bearer_headers(key), "admin")
    await _refused(stack, {})
    await stack.auth.authenticate(bearer_headers(ADMIN_KEY), "keys.create", "admin")
    events = audit_log.events()
    assert len(events) == 6
    assert all(e["event"] == "auth_decision" for e in events)
    assert [e["decision"] for e in events] == ["allow", "allow", "deny", "deny", "deny", "allow"]
    allow = events[0]
    assert allow["key_id"] == key_id and allow["route"] == "chat.completions" and allow["via"] == "key"
    assert allow["org"] == "acme" and allow["user"] == "alice"
    bad_secret = events[2]
    assert bad_secret["key_id"] == key_id and bad_secret["code"] == "invalid_api_key" and bad_secret["status"] == 401
    no_scope = events[3]
    assert no_scope["key_id"] == key_id and no_scope["code"] == "admin_required" and no_scope["status"] == 403
    assert events[4]["key_id"] is None
    assert events[5]["via"] == "admin_key" and events[5]["route"] == "keys.create"
    text = audit_log.text()
    for hidden in (key, secret_of(key), wrong, secret_of(wrong), ADMIN_KEY):
        assert hidden not in text


async def test_a_malformed_token_is_audited_without_a_key_id(stack: KeyStack, audit_log: AuditLog) -> None:
    token = "sk-proj-" + secrets.token_urlsafe(32)
    await _refused(stack, bearer_headers(token))
    (event,) = audit_log.events()
    assert event["decision"] == "deny" and event["key_id"] is None and event["code"] == "invalid_api_key"
    assert token not in audit_log.text()


# --- open mode and construction ------------------------------------------------------------------------------------


async def test_open_mode_lets_anyone_in_as_open() -> None:
    auth = Authenticator("open", Audit())
    for headers in ({}, bearer_headers("anything"), {"x-api-key": "gwk_abcd1234_" + "a" * 43}):
        for scope in ("chat", "admin", None):
            assert await auth.authenticate(headers, "chat.completions", scope) is OPEN  # type: ignore[arg-type]


def test_keys_mode_needs_a_hasher_and_a_cache() -> None:
    with pytest.raises(ValueError, match="pepper"):
        Authenticator("keys", Audit())

    async def lookup(key_id: str) -> KeyRecord | None:
        return None

    with pytest.raises(ValueError):
        Authenticator("keys", Audit(), cache=KeyCache(lookup))
