"""A key store seeded with one bench key (org bench-org, executor, may name users, admin for the providers view).

    eval "$(.venv/bin/python -m bench.seed_key /tmp/bench-keys.db)"   # exports BENCH_KEY, BENCH_PEPPER, BENCH_KEYS_DB

The gateway then runs with `auth.store: $BENCH_KEYS_DB` and `auth.pepper: ${BENCH_PEPPER}` (bench/gateway.bench.yaml)
and the load sends `authorization: Bearer $BENCH_KEY` (for the peer harness: CUSTOM_HEADERS)."""

from __future__ import annotations

import secrets
import shlex
import sys
import time
from pathlib import Path

from gateway.auth.keys import KeyHasher, KeyRecord, SecretVersion, format_key, new_key_id, new_secret
from gateway.auth.registry import KeyRegistry
from gateway.auth.store import SqliteKeyStore


def seed(store_path: Path) -> dict[str, str]:
    """A fresh store at `store_path` holding one key; the environment a bench run needs."""
    store_path.unlink(missing_ok=True)
    pepper = secrets.token_urlsafe(32)
    hasher = KeyHasher(pepper.encode())
    key_id, secret = new_key_id(), new_secret()
    record = KeyRecord(key_id=key_id, name="bench", org="bench-org", daemons=("executor",), may_set_user=True,
                       scopes=("chat", "embeddings", "admin"),
                       secrets=(SecretVersion(version=1, digest=hasher.digest(secret), created_at=time.time()),),
                       pepper_id=hasher.pepper_id)  # fmt: skip
    store = SqliteKeyStore(store_path)
    KeyRegistry(store).create(record)
    store.close()
    return {"BENCH_KEY": format_key(key_id, secret), "BENCH_PEPPER": pepper, "BENCH_KEYS_DB": str(store_path)}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.seed_key <store path>")
    for name, value in seed(Path(sys.argv[1])).items():
        print(f"export {name}={shlex.quote(value)}")
