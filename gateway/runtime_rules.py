"""Rules set at run time through the admin API (limits, budgets): named bodies kept with their store's data,
versioned, read by the owner actor, and laid over a policy file's rules on every replica."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from gateway.config import DynamoConfig

log = logging.getLogger("gateway.rules")
M = TypeVar("M", bound=BaseModel)
Body = dict[str, Any]
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a rule's name, in a URL path and a YAML key alike
REREAD_S = 5.0  # an owner reads its rules again this often (another cluster sharing the table may have changed one)
RULES, VERSION, RULE = "rules#", "version", "rule:"


@dataclass(frozen=True, slots=True)
class RuleSet:
    """One kind's runtime rules: name -> body (a JSON object), or None for a rule switched off (the file's rule of
    that name no longer applies). `version` grows with every change."""

    version: int = 0
    rules: Mapping[str, Body | None] = field(default_factory=dict)


class RuleStore(Protocol):
    def read(self) -> RuleSet: ...

    def put(self, name: str, body: Body | None) -> RuleSet:
        """Set (or switch off, with None) one rule; the set after the change."""
        ...

    def close(self) -> None: ...


class SqliteRuleStore:
    """A table `runtime_rules` in the store's own SQLite file (its own connection; WAL)."""

    def __init__(self, path: str | Path, kind: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._kind = kind
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS runtime_rules (kind TEXT NOT NULL, name TEXT NOT NULL,"
                         " body TEXT, seq INTEGER NOT NULL, PRIMARY KEY (kind, name))")  # fmt: skip

    def read(self) -> RuleSet:
        rows = self._db.execute("SELECT name, body, seq FROM runtime_rules WHERE kind = ?", (self._kind,)).fetchall()
        return RuleSet(max((int(r[2]) for r in rows), default=0),
                       {name: json.loads(body) if body is not None else None for name, body, _ in rows})  # fmt: skip

    def put(self, name: str, body: Body | None) -> RuleSet:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runtime_rules WHERE kind = ?",
                                      (self._kind,)).fetchone()  # fmt: skip
            self._db.execute("INSERT OR REPLACE INTO runtime_rules VALUES (?, ?, ?, ?)",
                             (self._kind, name, json.dumps(body) if body is not None else None, seq))  # fmt: skip
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return self.read()

    def close(self) -> None:
        self._db.close()


class DynamoRuleStore:
    """One item `rules#<kind>` in the store's table: `version` (ADDed to by every change) and one attribute per rule,
    `rule:<name>` (its body as JSON, or NULL when switched off). A change is one UpdateItem, so writers from
    several clusters never lose each other's rules (an item holds up to 400 KB: some thousands of rules)."""

    def __init__(self, config: DynamoConfig, kind: str) -> None:
        from gateway.dynamo_table import dynamo_client, ensure_table

        self._table, self._key = config.table, {"pk": {"S": RULES + kind}}
        self._client = dynamo_client(config.region, config.endpoint_url, attempts=3, connect_s=2, read_s=3)
        if config.create_table:
            ensure_table(self._client, self._table)

    def read(self) -> RuleSet:
        item = self._client.get_item(TableName=self._table, Key=self._key, ConsistentRead=True).get("Item")
        return _rule_set(item or {})

    def put(self, name: str, body: Body | None) -> RuleSet:
        value: dict[str, Any] = {"S": json.dumps(body)} if body is not None else {"NULL": True}
        item = self._client.update_item(
            TableName=self._table, Key=self._key, UpdateExpression="SET #r = :b ADD #v :one",
            ExpressionAttributeNames={"#r": RULE + name, "#v": VERSION},
            ExpressionAttributeValues={":b": value, ":one": {"N": "1"}}, ReturnValues="ALL_NEW",
        )["Attributes"]  # fmt: skip
        return _rule_set(item)

    def close(self) -> None:
        self._client.close()


def _rule_set(item: Mapping[str, Any]) -> RuleSet:
    rules = {k.removeprefix(RULE): (json.loads(v["S"]) if "S" in v else None) for k, v in item.items()
             if k.startswith(RULE)}  # fmt: skip
    return RuleSet(int(item[VERSION]["N"]) if VERSION in item else 0, rules)


def open_rule_store(kind: str, sqlite_path: str, dynamo: DynamoConfig | None) -> RuleStore:
    """Next to the kind's data: its DynamoDB table when it has one, else its SQLite file."""
    if dynamo is not None:
        return DynamoRuleStore(dynamo, kind)
    return SqliteRuleStore(Path(sqlite_path).expanduser(), kind)


class RuleKeeper:
    """The owner side (in the limits and budget actors): the rules as last read, read again every REREAD_S.
    Blocking (the actors call it in a thread); one store call at a time."""

    def __init__(self, store: RuleStore, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store, self._monotonic = store, monotonic
        self._lock = threading.Lock()
        self._rules: RuleSet | None = None
        self._read_at = 0.0

    def since(self, version: int) -> RuleSet | None:
        """The rules, if they changed since `version` (None: the caller's are current)."""
        with self._lock:
            if self._rules is None or self._monotonic() - self._read_at > REREAD_S:
                self._rules, self._read_at = self._store.read(), self._monotonic()
            return self._rules if self._rules.version != version else None

    def put(self, name: str, body: Body | None) -> RuleSet:
        with self._lock:
            self._rules, self._read_at = self._store.put(name, body), self._monotonic()
            return self._rules

    def close(self) -> None:
        self._store.close()


class Overlay(Generic[M]):
    """The replica side: a policy file's rules with the runtime ones laid over them (same name: the runtime rule
    wins; None: off), handed to `adopt` whenever they change. A stored body this build cannot read is skipped and
    logged (the file's rule of that name stays), never a crash."""

    def __init__(self, kind: str, file_rules: Mapping[str, M], parse: Callable[[Body], M],
                 adopt: Callable[[dict[str, M]], None]) -> None:  # fmt: skip
        self.kind, self.version = kind, 0
        self._file, self._parse, self._adopt = dict(file_rules), parse, adopt
        self._runtime: dict[str, M | None] = {}

    def validate(self, body: Body) -> M:
        """A body as a rule of this kind (pydantic's ValidationError, or a ConfigError naming the field)."""
        return self._parse(body)

    def install(self, rules: RuleSet) -> None:
        if rules.version <= self.version:
            return
        runtime: dict[str, M | None] = {}
        for name, body in rules.rules.items():
            try:
                runtime[name] = self._parse(body) if body is not None else None
            except Exception as exc:
                log.warning("runtime %s rule `%s` is not valid here (%s); skipped", self.kind, name, exc)
        self._runtime, self.version = runtime, rules.version
        self._adopt(self.in_force())

    def in_force(self) -> dict[str, M]:
        merged: dict[str, M] = {**self._file, **{k: v for k, v in self._runtime.items() if v is not None}}
        return {k: v for k, v in merged.items() if not (k in self._runtime and self._runtime[k] is None)}

    def source(self, name: str) -> str:
        """Where the rule of this name comes from: `api`, `file`, `off` (switched off at run time) or `none`."""
        if name in self._runtime:
            return "api" if self._runtime[name] is not None else "off"
        return "file" if name in self._file else "none"

    def names(self) -> list[str]:
        return sorted({*self._file, *self._runtime})
