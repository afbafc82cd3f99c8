"""The session gateway's credentials: a bootstrap admin key and an operations key (every scope and daemon, may name
end users), both made fresh for each test run; the operations key is seeded into the key store before deploy. And
the provider key kept in Secrets Manager. All of them recognisable, for the leak test."""

from __future__ import annotations

import secrets
import time

from gateway.auth.keys import KeyHasher, KeyRecord, SecretVersion, format_key, new_key_id, new_secret

ORG = "tests"
PEPPER = secrets.token_urlsafe(32)
ADMIN_KEY = "adm-" + secrets.token_urlsafe(32)
OPS_KEY_ID = new_key_id()
OPS_KEY = format_key(OPS_KEY_ID, _secret := new_secret())
VAULT_KEY = "sk-vault-" + secrets.token_urlsafe(24)  # the vault provider's key, as first stored in Secrets Manager
AUTH = {"authorization": f"Bearer {OPS_KEY}"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def ops_record() -> KeyRecord:
    hasher = KeyHasher(PEPPER.encode())
    version = SecretVersion(version=1, digest=hasher.digest(_secret), created_at=time.time())
    return KeyRecord(key_id=OPS_KEY_ID, name="test-ops", org=ORG, daemons=("router", "executor", "evaluator",
                     "working_memory"), scopes=("chat", "embeddings", "admin"), may_set_user=True,
                     secrets=(version,), pepper_id=hasher.pepper_id)  # fmt: skip
