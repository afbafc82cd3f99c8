"""Gateway keys themselves: the `gwk_<id>_<secret>` format, the peppered HMAC digest and its constant-time check, the
sealed secret of an idempotent rotation, and what the admin API may show of a key record."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from gateway.auth import keys as keys_module
from gateway.auth.keys import (
    KeyHasher,
    KeyRecord,
    Rotation,
    SecretVersion,
    format_key,
    idempotency_digest,
    new_key_id,
    new_secret,
    parse_key,
)
from tests.unit.auth_support import PEPPER

# --- the key format ------------------------------------------------------------------------------------------------


def test_a_formatted_key_parses_back_to_its_id_and_secret() -> None:
    for _ in range(20):
        key_id, secret = new_key_id(), new_secret()
        key = format_key(key_id, secret)
        assert key.startswith("gwk_")
        assert parse_key(key) == (key_id, secret)


def test_secrets_carry_at_least_256_bits_and_are_never_repeated() -> None:
    made = [new_secret() for _ in range(200)]
    assert len(set(made)) == len(made)
    for secret in made:
        assert len(secret) >= 43  # 32 random bytes, urlsafe base64 without padding
        assert re.fullmatch(r"[A-Za-z0-9_-]+", secret)
    ids = [new_key_id() for _ in range(200)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z0-9]{16}", i) for i in ids)


def test_a_secret_that_contains_underscores_still_parses() -> None:
    secret = "ab_cd-" * 8  # urlsafe base64 may contain `_`
    assert parse_key(format_key("abcd1234", secret)) == ("abcd1234", secret)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "gwk_",
        "sk-" + "a" * 50,  # another vendor's key
        "gwx_abcd1234_" + "a" * 43,  # wrong prefix
        "GWK_abcd1234_" + "a" * 43,  # the prefix is case-sensitive
        "gwk_abc1234_" + "a" * 43,  # key id of 7 characters
        "gwk_" + "a" * 33 + "_" + "b" * 43,  # key id of 33 characters
        "gwk_ABCD1234_" + "a" * 43,  # upper-case key id
        "gwk_abcd1234_" + "a" * 42,  # secret of 42 characters (< 256 bits)
        "gwk_abcd1234_" + "a" * 129,  # secret longer than any issued
        "gwk_abcd_1234_" + "a" * 43,  # an underscore inside the key id
        "gwk__abcd1234_" + "a" * 43,  # an extra underscore after the prefix
        "gwk_abcd1234__",  # no secret
        "gwk_abcd1234_" + "a" * 42 + "=",  # padding / characters outside the urlsafe alphabet
        " gwk_abcd1234_" + "a" * 43,  # leading space
    ],
)
def test_malformed_tokens_do_not_parse(token: str) -> None:
    assert parse_key(token) is None


# --- KeyHasher -----------------------------------------------------------------------------------------------------


def test_the_digest_is_hmac_sha256_keyed_with_the_pepper() -> None:
    hasher = KeyHasher(PEPPER)
    secret = new_secret()
    assert hasher.digest(secret) == hmac.new(PEPPER, secret.encode(), hashlib.sha256).hexdigest()
    assert hasher.digest(secret) != hashlib.sha256(secret.encode()).hexdigest()  # not a bare hash
    other = KeyHasher(PEPPER + b"!")
    assert other.digest(secret) != hasher.digest(secret)
    assert other.pepper_id != hasher.pepper_id
    assert KeyHasher(PEPPER).pepper_id == hasher.pepper_id  # stable for one pepper


def test_a_pepper_shorter_than_16_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        KeyHasher(b"x" * 15)
    KeyHasher(b"x" * 16)


def test_the_hasher_never_shows_its_pepper() -> None:
    hasher = KeyHasher(PEPPER)
    for text in (repr(hasher), str(hasher)):
        assert PEPPER.decode() not in text
        assert hasher.pepper_id in text
    assert PEPPER.decode() not in hasher.pepper_id


def _record(*versions: SecretVersion, **fields: object) -> KeyRecord:
    return KeyRecord(key_id="abcd1234efgh5678", name="ci", org="acme", secrets=versions, **fields)


def test_matches_finds_the_version_the_secret_is() -> None:
    hasher = KeyHasher(PEPPER)
    old, new = new_secret(), new_secret()
    v1 = SecretVersion(version=1, digest=hasher.digest(old), created_at=0.0, expires_at=1_000.0)
    v2 = SecretVersion(version=2, digest=hasher.digest(new), created_at=500.0)
    record = _record(v1, v2)
    assert hasher.matches(record, new, now=600.0) == v2
    assert hasher.matches(record, old, now=600.0) == v1  # within its grace period
    assert hasher.matches(record, new_secret(), now=600.0) is None
    assert KeyHasher(PEPPER + b"?").matches(record, new, now=600.0) is None  # another pepper: nothing matches


def test_a_version_past_its_expiry_does_not_match() -> None:
    hasher = KeyHasher(PEPPER)
    old, new = new_secret(), new_secret()
    record = _record(
        SecretVersion(version=1, digest=hasher.digest(old), created_at=0.0, expires_at=1_000.0),
        SecretVersion(version=2, digest=hasher.digest(new), created_at=500.0),
    )
    assert hasher.matches(record, old, now=999.9) is not None
    assert hasher.matches(record, old, now=1_000.0) is None  # expiry is exclusive
    assert hasher.matches(record, new, now=10**12) is not None  # the current version does not expire


def test_every_version_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = KeyHasher(PEPPER)
    secret = new_secret()
    record = _record(
        SecretVersion(version=1, digest=hasher.digest(new_secret()), created_at=0.0),
        SecretVersion(version=2, digest=hasher.digest(secret), created_at=0.0),
        SecretVersion(version=3, digest=hasher.digest(new_secret()), created_at=0.0),
    )
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    assert hasher.matches(record, secret, now=1.0) is not None
    assert len(calls) == 3  # no early exit on the first match or mismatch
    assert {a for a, _ in calls} == {v.digest for v in record.secrets}


def test_a_sealed_secret_unseals_only_with_its_idempotency_key_and_key_id() -> None:
    hasher = KeyHasher(PEPPER)
    secret = new_secret()
    sealed = hasher.seal(secret, "idem-1", "abcd1234")
    assert secret not in sealed and secret.encode().hex() != sealed
    assert hasher.unseal(sealed, "idem-1", "abcd1234") == secret
    for wrong in (
        lambda: hasher.unseal(sealed, "idem-2", "abcd1234"),
        lambda: hasher.unseal(sealed, "idem-1", "abcd1235"),
        lambda: KeyHasher(PEPPER + b"!").unseal(sealed, "idem-1", "abcd1234"),
    ):
        try:
            assert wrong() != secret
        except UnicodeDecodeError:
            pass  # the wrong pad usually yields bytes that are not even text


def test_sealing_is_per_key_and_idempotency_key() -> None:
    hasher = KeyHasher(PEPPER)
    secret = new_secret()
    seals = {hasher.seal(secret, i, k) for i in ("a", "b") for k in ("key1xxxx", "key2xxxx")}
    assert len(seals) == 4
    assert idempotency_digest("a", "key1xxxx") != idempotency_digest("a", "key2xxxx")
    stored = idempotency_digest("client-idempotency-key", "key1xxxx")
    assert re.fullmatch(r"[0-9a-f]{64}", stored) and "client-idempotency-key" not in stored  # stored as a digest


# --- the record as the admin API shows it -----------------------------------------------------------------------


def test_a_public_record_never_shows_digests_sealed_secrets_or_the_pepper_id() -> None:
    hasher = KeyHasher(PEPPER)
    secret = new_secret()
    digest = hasher.digest(secret)
    sealed = hasher.seal(secret, "idem", "abcd1234efgh5678")
    record = _record(
        SecretVersion(version=1, digest=hasher.digest(new_secret()), created_at=1.0, expires_at=61.0),
        SecretVersion(version=2, digest=digest, created_at=2.0),
        rotations=(
            Rotation(idempotency=idempotency_digest("idem", "abcd1234efgh5678"), version=2, sealed=sealed, at=2.0),
        ),
        pepper_id=hasher.pepper_id,
        models=("claude-*",),
        scopes=("chat",),
    )
    body = record.public()
    assert not {"secrets", "rotations", "pepper_id"} & set(body)
    text = repr(body)
    for hidden in (digest, sealed, hasher.pepper_id, secret, record.secrets[0].digest):
        assert hidden not in text
    assert body["secret_versions"] == [
        {"version": 1, "created_at": 1.0, "expires_at": 61.0},
        {"version": 2, "created_at": 2.0, "expires_at": None},
    ]
    assert body["key_id"] == "abcd1234efgh5678" and body["models"] == ["claude-*"] and body["scopes"] == ["chat"]


def test_usable_at_says_why_a_key_cannot_be_used() -> None:
    record = _record(expires_at=100.0)
    assert record.usable_at(99.0) is None
    assert "expired" in (record.usable_at(100.0) or "")
    assert "revoked" in (record.model_copy(update={"status": "revoked"}).usable_at(0.0) or "")
    assert _record().usable_at(10**12) is None  # no expiry
