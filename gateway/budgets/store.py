"""Settled spend, durably: one row per (charge, account), idempotent by charge id; embedded default is a local
SQLite file in WAL mode (`gateway.budgets.dynamo` keeps it in DynamoDB behind the same SpendStore protocol).
Money is in pico-dollars (integers), so what is booked equals what was billed."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

LeaseRow = tuple[str, str, int, int]  # account, replica, picos, tokens
TotalRow = tuple[str, int, int]  # account, picos, tokens


@dataclass(frozen=True, slots=True)
class Charge:
    """What one call cost, against every account it spends from. `id` makes a replayed batch harmless."""

    id: str
    accounts: tuple[str, ...]
    picos: int
    tokens: int


class SpendStore(Protocol):
    def record(self, charges: Iterable[Charge]) -> list[Charge]:
        """Persist `charges`; return those not seen before (a replay records nothing twice)."""
        ...

    def total(self, account: str) -> tuple[int, int]:
        """Settled (picos, tokens) of one account id."""
        ...

    def totals(self) -> dict[str, tuple[int, int]]:
        """Settled (picos, tokens) per account id."""
        ...

    def totals_page(self, prefix: str, after: str | None, limit: int) -> tuple[list[TotalRow], str | None]:
        """Settled totals of the accounts whose id starts with `prefix`, at most `limit` of them after the cursor
        `after`, and the cursor of the next page (None: that was the last). A cursor is opaque to the caller."""
        ...

    def save_leases(self, rows: Iterable[LeaseRow]) -> None:
        """Upsert what each replica holds of an account (account, replica, picos, tokens); zeros delete."""
        ...

    def leases(self, account: str) -> dict[str, tuple[int, int, float]]:
        """What each replica held of `account` when last saved: replica -> (picos, tokens, saved at, Unix s)."""
        ...

    def close(self) -> None: ...


_SCHEMA = (
    # one row per charge (its accounts as JSON, for audits), and a running total per account: a batch of N calls
    # on K accounts is N inserts and K upserts in one transaction
    "CREATE TABLE IF NOT EXISTS spend_charges (id TEXT PRIMARY KEY, accounts TEXT NOT NULL, picos INTEGER NOT NULL,"
    " tokens INTEGER NOT NULL, at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS spend_totals (account TEXT PRIMARY KEY, picos INTEGER NOT NULL,"
    " tokens INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS leases (account TEXT NOT NULL, replica TEXT NOT NULL, picos INTEGER NOT NULL,"
    " tokens INTEGER NOT NULL, at REAL NOT NULL, PRIMARY KEY (account, replica))",
)
_MONEY_TABLES = ("spend_charges", "spend_totals", "leases")
_PICOS_PER_MICRO = 1_000_000  # stores written before money was exact kept micro-dollars
_UPSERT_TOTAL = (
    "INSERT INTO spend_totals (account, picos, tokens) VALUES (?, ?, ?) ON CONFLICT (account) DO UPDATE SET"
    " picos = picos + excluded.picos, tokens = tokens + excluded.tokens"
)


class SqliteSpendStore:
    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a settled batch survives a crash of the process or the host
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._migrate()

    def _migrate(self) -> None:
        """Stores written by earlier versions move to this layout, once, in one transaction each: money kept in
        micro-dollars becomes pico-dollars; spend booked by the first layout (one row per charge and account)
        moves to the per-charge and per-account tables."""
        self._micros_to_picos()
        old = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'charges'").fetchone()
        if old is None:
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(f"INSERT OR IGNORE INTO spend_charges SELECT id, json_group_array(account),"
                         f" MAX(micros) * {_PICOS_PER_MICRO}, MAX(tokens), MAX(at)"
                         " FROM charges GROUP BY id")  # fmt: skip
        self._db.execute(f"INSERT INTO spend_totals (account, picos, tokens) SELECT account,"
                         f" SUM(micros) * {_PICOS_PER_MICRO}, SUM(tokens) FROM charges WHERE true GROUP BY account"
                         " ON CONFLICT (account) DO UPDATE SET picos = picos + excluded.picos,"
                         " tokens = tokens + excluded.tokens")  # fmt: skip
        self._db.execute("DROP TABLE charges")
        self._db.execute("COMMIT")

    def _micros_to_picos(self) -> None:
        tables = [t for t in _MONEY_TABLES if "micros" in self._columns(t)]
        if not tables:
            return
        self._db.execute("BEGIN IMMEDIATE")
        for table in tables:
            self._db.execute(f"ALTER TABLE {table} RENAME COLUMN micros TO picos")
            self._db.execute(f"UPDATE {table} SET picos = picos * {_PICOS_PER_MICRO}")
        self._db.execute("COMMIT")

    def _columns(self, table: str) -> set[str]:
        return {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}

    def record(self, charges: Iterable[Charge]) -> list[Charge]:
        batch = list({c.id: c for c in charges}.values())  # a charge twice in one batch is one charge
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            seen: set[str] = set()
            for i in range(0, len(batch), 500):
                ids = [c.id for c in batch[i : i + 500]]
                marks = ",".join("?" * len(ids))
                seen.update(r[0] for r in self._db.execute(f"SELECT id FROM spend_charges WHERE id IN ({marks})", ids))
            fresh = [c for c in batch if c.id not in seen]
            self._db.executemany("INSERT INTO spend_charges VALUES (?, ?, ?, ?, ?)",
                                 [(c.id, json.dumps(c.accounts), c.picos, c.tokens, now) for c in fresh])  # fmt: skip
            totals: dict[str, list[int]] = {}
            for c in fresh:
                for account in dict.fromkeys(c.accounts):
                    t = totals.setdefault(account, [0, 0])
                    t[0] += c.picos
                    t[1] += c.tokens
            self._db.executemany(_UPSERT_TOTAL, [(a, m, t) for a, (m, t) in totals.items()])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return fresh

    def total(self, account: str) -> tuple[int, int]:
        row = self._db.execute("SELECT picos, tokens FROM spend_totals WHERE account = ?", (account,)).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def save_leases(self, rows: Iterable[LeaseRow]) -> None:
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for account, replica, picos, tokens in rows:
                if picos or tokens:
                    self._db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?)",
                                     (account, replica, picos, tokens, now))  # fmt: skip
                else:
                    self._db.execute("DELETE FROM leases WHERE account = ? AND replica = ?", (account, replica))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def leases(self, account: str) -> dict[str, tuple[int, int, float]]:
        rows = self._db.execute("SELECT replica, picos, tokens, at FROM leases WHERE account = ?", (account,))
        return {replica: (int(m), int(t), float(at)) for replica, m, t, at in rows}

    def totals(self) -> dict[str, tuple[int, int]]:
        rows = self._db.execute("SELECT account, picos, tokens FROM spend_totals")
        return {account: (int(m), int(t)) for account, m, t in rows}

    def totals_page(self, prefix: str, after: str | None, limit: int) -> tuple[list[TotalRow], str | None]:
        """In account order; the cursor is the last account id of the page."""
        rows = self._db.execute("SELECT account, picos, tokens FROM spend_totals WHERE account > ? AND"
                                " substr(account, 1, ?) = ? ORDER BY account LIMIT ?",
                                (after or "", len(prefix), prefix, limit)).fetchall()  # fmt: skip
        page = [(a, int(m), int(t)) for a, m, t in rows]
        return page, (page[-1][0] if len(page) == limit else None)

    def close(self) -> None:
        self._db.close()
