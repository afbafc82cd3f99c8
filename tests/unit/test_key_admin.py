"""Issuing and rotating keys: KeyAdmin's validation of a new key's body and its safe defaults, the registry's
rotation grace periods (its own clock), idempotent rotations, revocation, and the change feed replicas pull."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.auth import registry as registry_module
from gateway.auth.keys import KeyRecord, SecretVersion, parse_key
from gateway.auth.registry import KeyRegistry
from gateway.auth.store import SqliteKeyStore
from gateway.schema import ErrorKind, GatewayError
from tests.unit.auth_support import T0, KeyStack, key_stack, secret_of


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyStack]:
    keys = key_stack(tmp_path, monkeypatch)
    yield keys
    keys.store.close()


async def _refused(stack: KeyStack, **body: object) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await stack.admin.create({"name": "n", "org": "acme", **body})
    assert info.value.kind is ErrorKind.BAD_REQUEST and info.value.status_code == 400
    assert stack.store.all() == []  # nothing was issued
    return info.value


# --- create: validation --------------------------------------------------------------------------------------------


async def test_an_unknown_field_is_refused_naming_it(stack: KeyStack) -> None:
    err = await _refused(stack, colour="red")
    assert err.param == "colour" and "colour" in err.message


async def test_a_models_glob_that_matches_no_catalog_model_is_refused_naming_its_index(stack: KeyStack) -> None:
    err = await _refused(stack, models=["gemini-*"])
    assert err.param == "models.0" and "gemini-*" in err.message
    err = await _refused(stack, models=["claude-*", "gpt-5*"])
    assert err.param == "models.1"
    err = await _refused(stack, models=[])
    assert err.param == "models"


async def test_an_unknown_budget_tier_is_refused(stack: KeyStack) -> None:
    err = await _refused(stack, budget_tier="platinum")
    assert err.param == "budget_tier" and "platinum" in err.message


async def test_expires_at_and_expires_in_s_together_are_refused(stack: KeyStack) -> None:
    err = await _refused(stack, expires_at=T0 + 100, expires_in_s=100)
    assert "expires_at" in err.message and "expires_in_s" in err.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"org": "acme/other"}, "org"),  # no `/` in an org (accounts are `org/user`)
        ({"org": ""}, "org"),
        ({"name": ""}, "name"),
        ({"scopes": ["chat", "root"]}, "scopes.1"),
        ({"scopes": []}, "scopes"),
        ({"daemons": ["janitor"]}, "daemons.0"),
        ({"expires_in_s": 0}, "expires_in_s"),
        ({"expires_at": -1}, "expires_at"),
    ],
)
async def test_invalid_fields_are_refused_naming_them(stack: KeyStack, body: dict[str, object], param: str) -> None:
    err = await _refused(stack, **body)
    assert err.param == param


async def test_a_body_that_is_not_an_object_is_refused(stack: KeyStack) -> None:
    for body in (["name"], "name", None):
        with pytest.raises(GatewayError) as info:
            await stack.admin.create(body)
        assert info.value.kind is ErrorKind.BAD_REQUEST and info.value.param == "body"


# --- create: what is issued ----------------------------------------------------------------------------------------


async def test_a_new_key_takes_the_safe_defaults(stack: KeyStack) -> None:
    made = await stack.issue()
    assert made["scopes"] == ["chat", "embeddings"]
    assert "admin" not in made["scopes"]
    assert made["may_set_user"] is False
    assert made["models"] == ["*"] and made["daemons"] == [] and made["user"] is None
    assert made["budget_tier"] is None and made["expires_at"] is None
    assert made["status"] == "active" and made["revision"] == 1 and made["created_at"] == T0
    assert [v["version"] for v in made["secret_versions"]] == [1]
    assert not {"secrets", "rotations", "pepper_id"} & set(made)


async def test_the_returned_key_is_a_well_formed_key_the_hasher_accepts(stack: KeyStack) -> None:
    made = await stack.issue(models=["claude-*"], budget_tier="gold", daemons=["executor"])
    key = str(made["key"])
    parsed = parse_key(key)
    assert parsed is not None and parsed[0] == made["key_id"]
    stored = stack.registry.lookup(parsed[0])
    assert stored is not None
    version = stack.hasher.matches(stored, parsed[1], now=T0)
    assert version is not None and version.version == 1
    assert stored.models == ("claude-*",) and stored.budget_tier == "gold" and stored.daemons == ("executor",)


async def test_the_store_holds_only_the_digest_never_the_secret(stack: KeyStack, tmp_path: Path) -> None:
    made = await stack.issue()
    secret = secret_of(str(made["key"]))
    stored = stack.store.get(str(made["key_id"]))
    assert stored is not None
    assert [v.digest for v in stored.secrets] == [stack.hasher.digest(secret)]
    assert stored.pepper_id == stack.hasher.pepper_id
    assert secret not in stored.model_dump_json()
    files = await asyncio.to_thread(lambda: {p.name: p.read_bytes() for p in tmp_path.iterdir()})
    assert "keys.db" in files
    for name, content in files.items():  # the database and its WAL
        assert secret.encode() not in content, name


async def test_expires_in_s_is_counted_from_now(stack: KeyStack) -> None:
    made = await stack.issue(expires_in_s=3_600)
    assert made["expires_at"] == T0 + 3_600
    made = await stack.issue(expires_at=T0 + 60)
    assert made["expires_at"] == T0 + 60


async def test_each_key_gets_its_own_id_and_secret(stack: KeyStack) -> None:
    made = [await stack.issue() for _ in range(5)]
    assert len({m["key_id"] for m in made}) == 5
    assert len({m["key"] for m in made}) == 5
    listed = await stack.admin.list()
    assert sorted(r["key_id"] for r in listed) == sorted(m["key_id"] for m in made)
    assert all("key" not in r and "secrets" not in r for r in listed)  # a listing never shows a secret again


async def test_get_and_revoke_of_an_unknown_key_are_not_found(stack: KeyStack) -> None:
    for call in (stack.admin.get("nosuchkey"), stack.admin.revoke("nosuchkey"),
                 stack.admin.rotate("nosuchkey", 0, None)):  # fmt: skip
        with pytest.raises(GatewayError) as info:
            await call
        assert info.value.kind is ErrorKind.NOT_FOUND and info.value.code == "key_not_found"


# --- rotation --------------------------------------------------------------------------------------------------


async def test_a_rotation_keeps_the_old_secret_for_its_grace_period(stack: KeyStack) -> None:
    made = await stack.issue()
    key_id, old = str(made["key_id"]), secret_of(str(made["key"]))
    stack.wall.advance(100)
    rotated = await stack.admin.rotate(key_id, 60, None)
    new = secret_of(str(rotated["key"]))
    assert new != old and rotated["secret_version"] == 2
    record = stack.registry.lookup(key_id)
    assert record is not None
    assert [(v.version, v.expires_at) for v in record.secrets] == [(1, T0 + 160), (2, None)]
    assert stack.hasher.matches(record, old, now=T0 + 159.9) is not None
    assert stack.hasher.matches(record, old, now=T0 + 160) is None
    assert stack.hasher.matches(record, new, now=T0 + 10**6) is not None
    assert rotated["secret_versions"] == [
        {"version": 1, "created_at": T0, "expires_at": T0 + 160},
        {"version": 2, "created_at": T0 + 100, "expires_at": None},
    ]


async def test_a_rotation_without_grace_cuts_the_old_secret_at_once(stack: KeyStack) -> None:
    made = await stack.issue()
    key_id, old = str(made["key_id"]), secret_of(str(made["key"]))
    rotated = await stack.admin.rotate(key_id, 0, None)
    record = stack.registry.lookup(key_id)
    assert record is not None
    assert stack.hasher.matches(record, old, now=T0) is None
    assert stack.hasher.matches(record, secret_of(str(rotated["key"])), now=T0) is not None


async def test_rotating_again_drops_expired_versions_and_never_extends_a_grace(stack: KeyStack) -> None:
    made = await stack.issue()
    key_id = str(made["key_id"])
    await stack.admin.rotate(key_id, 60, None)  # v1 ends at T0+60
    stack.wall.advance(10)
    await stack.admin.rotate(key_id, 3_600, None)  # v1 keeps T0+60; v2 ends at T0+3610
    record = stack.registry.lookup(key_id)
    assert record is not None
    assert [(v.version, v.expires_at) for v in record.secrets] == [(1, T0 + 60), (2, T0 + 3_610), (3, None)]
    stack.wall.advance(100)
    await stack.admin.rotate(key_id, 0, None)  # v1 is gone; v2 and v3 end now
    record = stack.registry.lookup(key_id)
    assert record is not None
    now = T0 + 110
    assert [(v.version, v.expires_at) for v in record.secrets] == [(2, now), (3, now), (4, None)]


async def test_a_replayed_idempotent_rotation_returns_the_same_key_and_rotates_once(stack: KeyStack) -> None:
    made = await stack.issue()
    key_id = str(made["key_id"])
    first = await stack.admin.rotate(key_id, 300, "rotate-2025-01")
    stack.wall.advance(5)
    replay = await stack.admin.rotate(key_id, 300, "rotate-2025-01")
    assert replay["key"] == first["key"] and replay["secret_version"] == first["secret_version"] == 2
    record = stack.registry.lookup(key_id)
    assert record is not None
    assert [v.version for v in record.secrets] == [1, 2] and record.revision == 2
    assert stack.hasher.matches(record, secret_of(str(replay["key"])), now=T0) is not None
    assert "rotate-2025-01" not in record.model_dump_json()  # the Idempotency-Key is kept only as a digest
    assert secret_of(str(first["key"])) not in record.model_dump_json()
    other = await stack.admin.rotate(key_id, 300, "rotate-2025-02")  # another Idempotency-Key: a new rotation
    assert other["key"] != first["key"] and other["secret_version"] == 3


async def test_rotations_without_an_idempotency_key_each_make_a_new_secret(stack: KeyStack) -> None:
    made = await stack.issue()
    key_id = str(made["key_id"])
    a = await stack.admin.rotate(key_id, 60, None)
    b = await stack.admin.rotate(key_id, 60, None)
    assert a["key"] != b["key"] and (a["secret_version"], b["secret_version"]) == (2, 3)


async def test_a_revoked_key_cannot_be_rotated(stack: KeyStack) -> None:
    made = await stack.issue()
    key_id = str(made["key_id"])
    revoked = await stack.admin.revoke(key_id)
    assert revoked["status"] == "revoked"
    for idempotency in (None, "idem"):
        with pytest.raises(GatewayError) as info:
            await stack.admin.rotate(key_id, 60, idempotency)
        assert info.value.kind is ErrorKind.BAD_REQUEST and info.value.code == "key_revoked"
        assert info.value.param == "key_id"
    record = stack.registry.lookup(key_id)
    assert record is not None and [v.version for v in record.secrets] == [1] and record.status == "revoked"


async def test_a_grace_period_outside_0_to_30_days_is_refused(stack: KeyStack) -> None:
    made = await stack.issue()
    for grace in (-1, 30 * 86_400 + 1):
        with pytest.raises(GatewayError) as info:
            await stack.admin.rotate(str(made["key_id"]), grace, None)
        assert info.value.param == "grace_s"
    record = stack.registry.lookup(str(made["key_id"]))
    assert record is not None and len(record.secrets) == 1


# --- the registry's change feed ------------------------------------------------------------------------------------


def _record(key_id: str) -> KeyRecord:
    return KeyRecord(key_id=key_id, name="n", org="acme",
                     secrets=(SecretVersion(version=1, digest="00" * 32, created_at=0.0),))  # fmt: skip


def test_changes_lists_the_records_changed_since_a_version(tmp_path: Path) -> None:
    clock = lambda: T0  # noqa: E731 - a frozen registry clock: versions then advance by one per change
    registry = KeyRegistry(SqliteKeyStore(tmp_path / "k.db"), clock=clock)
    start = registry.version
    assert registry.changes(start) is None  # nothing changed
    registry.create(_record("aaaa0001"))
    after_a = registry.version
    registry.create(_record("bbbb0001"))
    registry.revoke("aaaa0001")
    changes = registry.changes(after_a)
    assert changes is not None and not changes.reset and changes.version == registry.version
    assert sorted(r.key_id for r in changes.records) == ["aaaa0001", "bbbb0001"]
    assert next(r for r in changes.records if r.key_id == "aaaa0001").status == "revoked"
    changes = registry.changes(start)
    assert changes is not None and len(changes.records) == 2  # each key once, as it is now
    assert registry.changes(registry.version) is None
    version = registry.version
    registry.revoke("aaaa0001")  # already revoked: no change, nothing to pull
    assert registry.version == version


def test_a_replica_from_before_this_registry_is_told_to_reset(tmp_path: Path) -> None:
    registry = KeyRegistry(SqliteKeyStore(tmp_path / "k.db"), clock=lambda: T0)
    changes = registry.changes(0)  # a new replica
    assert changes is not None and changes.reset and changes.records == ()
    registry.create(_record("aaaa0001"))
    restarted = KeyRegistry(SqliteKeyStore(tmp_path / "k.db"), clock=lambda: T0 + 1)
    assert restarted.version > registry.version  # a restarted registry's versions stay ahead
    changes = restarted.changes(registry.version)
    assert changes is not None and changes.reset


def test_a_replica_too_far_behind_the_kept_log_is_told_to_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "CHANGES_KEPT", 3)
    registry = KeyRegistry(SqliteKeyStore(tmp_path / "k.db"), clock=lambda: T0)
    versions = []
    for i in range(5):
        registry.create(_record(f"key0000{i}"))
        versions.append(registry.version)
    changes = registry.changes(versions[0])  # changes 2..5 are wanted; the log holds only 3..5
    assert changes is not None and changes.reset
    changes = registry.changes(versions[2])
    assert changes is not None and not changes.reset
    assert sorted(r.key_id for r in changes.records) == ["key00003", "key00004"]
