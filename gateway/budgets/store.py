"""Settled spend, durably: one row per (charge, account), idempotent by charge id; embedded default is a local
SQLite file in WAL mode (`gateway.budgets.dynamo` keeps it in DynamoDB behind the same two methods)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.config import BudgetsConfig


LeaseRow = tuple[str, str, int, int]  # account, replica, micros, tokens


@dataclass(frozen=True, slots=True)
class Charge:
    """What one call cost, against every account it spends from. `id` makes a replayed batch harmless."""

    id: str
    accounts: tuple[str, ...]
    micros: int
    tokens: int


class SpendStore(Protocol):
    def record(self, charges: Iterable[Charge]) -> list[Charge]:
        """Persist `charges`; return those not seen before (a replay records nothing twice)."""
        ...

    def total(self, account: str) -> tuple[int, int]:
        """Settled (micros, tokens) of one account id."""
        ...

    def totals(self) -> dict[str, tuple[int, int]]:
        """Settled (micros, tokens) per account id."""
        ...

    def save_leases(self, rows: Iterable[LeaseRow]) -> None:
        """Upsert what each replica holds of an account (account, replica, micros, tokens); zeros delete."""
        ...

    def leases(self, account: str) -> dict[str, tuple[int, int, float]]:
        """What each replica held of `account` when last saved: replica -> (micros, tokens, saved at, Unix s)."""
        ...


class SqliteSpendStore:
    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a settled batch survives a crash of the process or the host
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS charges (id TEXT NOT NULL, account TEXT NOT NULL, micros INTEGER NOT NULL,"
            " tokens INTEGER NOT NULL, at REAL NOT NULL, PRIMARY KEY (id, account))"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS charges_by_account ON charges (account)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS leases (account TEXT NOT NULL, replica TEXT NOT NULL, micros INTEGER NOT NULL,"
            " tokens INTEGER NOT NULL, at REAL NOT NULL, PRIMARY KEY (account, replica))"
        )

    def record(self, charges: Iterable[Charge]) -> list[Charge]:
        fresh: list[Charge] = []
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for charge in charges:
                inserted = 0
                for account in charge.accounts:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO charges (id, account, micros, tokens, at) VALUES (?, ?, ?, ?, ?)",
                        (charge.id, account, charge.micros, charge.tokens, now),
                    )
                    inserted += cur.rowcount
                if inserted:
                    fresh.append(charge)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return fresh

    def total(self, account: str) -> tuple[int, int]:
        row = self._db.execute("SELECT SUM(micros), SUM(tokens) FROM charges WHERE account = ?", (account,)).fetchone()
        return (int(row[0] or 0), int(row[1] or 0))

    def save_leases(self, rows: Iterable[LeaseRow]) -> None:
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for account, replica, micros, tokens in rows:
                if micros or tokens:
                    self._db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?)",
                                     (account, replica, micros, tokens, now))  # fmt: skip
                else:
                    self._db.execute("DELETE FROM leases WHERE account = ? AND replica = ?", (account, replica))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def leases(self, account: str) -> dict[str, tuple[int, int, float]]:
        rows = self._db.execute("SELECT replica, micros, tokens, at FROM leases WHERE account = ?", (account,))
        return {replica: (int(m), int(t), float(at)) for replica, m, t, at in rows}

    def totals(self) -> dict[str, tuple[int, int]]:
        rows = self._db.execute("SELECT account, SUM(micros), SUM(tokens) FROM charges GROUP BY account")
        return {account: (int(m), int(t)) for account, m, t in rows}

    def close(self) -> None:
        self._db.close()


def open_store(config: BudgetsConfig) -> SpendStore:
    """The store `config.backend` names (boto3 is imported only for DynamoDB)."""
    if config.backend == "dynamodb":
        from gateway.budgets.dynamo import DynamoSpendStore

        dynamo = config.dynamodb
        return DynamoSpendStore(dynamo.table, dynamo.region, dynamo.endpoint_url, create_table=dynamo.create_table)
    return SqliteSpendStore(Path(config.store).expanduser())
