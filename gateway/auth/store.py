"""Key records, durably: the store protocol, and its embedded default, a local SQLite file (WAL) with one JSON row
per key; `gateway.auth.dynamo` keeps them in DynamoDB behind the same methods (for many clusters)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from gateway.auth.keys import KeyRecord

if TYPE_CHECKING:
    from gateway.config import AuthConfig


class KeyStore(Protocol):
    def get(self, key_id: str) -> KeyRecord | None:
        """One key record, or None."""
        ...

    def put(self, record: KeyRecord, expected_revision: int | None) -> bool:
        """Write `record` if the stored one is at `expected_revision` (None: if there is none yet); False on a
        conflict (another writer came first), and nothing is written."""
        ...

    def all(self) -> list[KeyRecord]:
        """Every key record (the admin listing)."""
        ...

    def close(self) -> None: ...


class SqliteKeyStore:
    """One row per key id: its revision and the record as JSON. Conditional writes make the revision a compare-and-
    swap, so two admin calls on one key never lose one another's change."""

    def __init__(self, path: str | Path) -> None:
        file = Path(path).expanduser()
        file.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(file, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS gateway_keys (key_id TEXT PRIMARY KEY, revision INTEGER NOT NULL,"
                         " record TEXT NOT NULL)")  # fmt: skip
        self._lock = threading.Lock()
        file.chmod(0o600)

    def get(self, key_id: str) -> KeyRecord | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM gateway_keys WHERE key_id = ?", (key_id,)).fetchone()
        return KeyRecord.model_validate_json(row[0]) if row else None

    def put(self, record: KeyRecord, expected_revision: int | None) -> bool:
        body = record.model_dump_json()
        with self._lock:
            if expected_revision is None:
                cur = self._db.execute("INSERT OR IGNORE INTO gateway_keys (key_id, revision, record) VALUES (?, ?, ?)",
                                       (record.key_id, record.revision, body))  # fmt: skip
            else:
                cur = self._db.execute(
                    "UPDATE gateway_keys SET revision = ?, record = ? WHERE key_id = ? AND revision = ?",
                    (record.revision, body, record.key_id, expected_revision),
                )
            return cur.rowcount == 1

    def all(self) -> list[KeyRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM gateway_keys ORDER BY key_id").fetchall()
        return [KeyRecord.model_validate_json(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_key_store(config: AuthConfig) -> KeyStore:
    """The configured store (`auth.backend`)."""
    if config.backend == "dynamodb":
        from gateway.auth.dynamo import DynamoKeyStore

        return DynamoKeyStore(config.dynamodb)
    return SqliteKeyStore(config.store)
