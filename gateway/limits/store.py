"""Where bucket levels live: in memory (a replica's fallback), in memory with a SQLite file (the embedded default:
an owner restarted mid-minute reads its levels back, never a full bucket), or DynamoDB (`gateway.limits.dynamo`)."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.config import LimitsConfig
from gateway.limits.bucket import BucketSpec, Level, full, refilled, share, wait_ms


@dataclass(frozen=True, slots=True)
class Taken:
    """What a take granted (0: refused), the bucket's level after it, and when `need` would fit (refusals)."""

    granted: int
    level: int
    wait_ms: int | None = 0


class BucketStore(Protocol):
    def take(self, bucket: str, spec: BucketSpec, want: int, need: int, holders: int, now_ms: int) -> Taken:
        """Take up to `want`, at least `need` (else nothing), sharing what is left between `holders`."""
        ...

    def give(self, bucket: str, spec: BucketSpec, amount: int, now_ms: int) -> int:
        """Put `amount` back (never above capacity), or charge it when negative (a debt); the level after."""
        ...

    def level(self, bucket: str, spec: BucketSpec, now_ms: int) -> Level: ...

    def close(self) -> None: ...


def decide(spec: BucketSpec, level: Level, want: int, need: int, holders: int, now_ms: int) -> tuple[Taken, Level]:
    """One take against a level already refilled to `now_ms`: the answer and the level to store (pure)."""
    granted = share(level.milli, want, need, holders)
    after = Level(level.milli - granted, level.at_ms)
    return Taken(granted, after.milli, 0 if granted else wait_ms(spec, level, need)), after


def given(spec: BucketSpec, level: Level, amount: int) -> Level:
    return Level(min(spec.capacity, level.milli + amount), level.at_ms)


class MemoryBucketStore:
    """Levels in a dict (thread-safe: the SQLite store's writes run in threads)."""

    def __init__(self) -> None:
        self._levels: dict[str, Level] = {}
        self._lock = threading.Lock()

    def _read(self, bucket: str, spec: BucketSpec, now_ms: int) -> Level:
        found = self._levels.get(bucket)
        if found is None:
            found = self._load(bucket, spec, now_ms)
        return refilled(spec, found, now_ms)

    def _load(self, bucket: str, spec: BucketSpec, now_ms: int) -> Level:
        return full(spec, now_ms)

    def _write(self, bucket: str, level: Level) -> None:
        self._levels[bucket] = level

    def take(self, bucket: str, spec: BucketSpec, want: int, need: int, holders: int, now_ms: int) -> Taken:
        with self._lock:
            taken, after = decide(spec, self._read(bucket, spec, now_ms), want, need, holders, now_ms)
            if taken.granted:
                self._write(bucket, after)
            return taken

    def give(self, bucket: str, spec: BucketSpec, amount: int, now_ms: int) -> int:
        with self._lock:
            after = given(spec, self._read(bucket, spec, now_ms), amount)
            self._write(bucket, after)
            return after.milli

    def level(self, bucket: str, spec: BucketSpec, now_ms: int) -> Level:
        with self._lock:
            return self._read(bucket, spec, now_ms)

    def close(self) -> None:
        pass


class SqliteBucketStore(MemoryBucketStore):
    """The embedded default: every change is written through before it is answered (WAL, synchronous=FULL), so
    a restarted owner continues from the last level it handed out from."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS buckets (id TEXT PRIMARY KEY, milli INTEGER NOT NULL,"
                         " at_ms INTEGER NOT NULL)")  # fmt: skip

    def _load(self, bucket: str, spec: BucketSpec, now_ms: int) -> Level:
        row = self._db.execute("SELECT milli, at_ms FROM buckets WHERE id = ?", (bucket,)).fetchone()
        return Level(int(row[0]), int(row[1])) if row else full(spec, now_ms)

    def _write(self, bucket: str, level: Level) -> None:
        self._db.execute("INSERT OR REPLACE INTO buckets VALUES (?, ?, ?)", (bucket, level.milli, level.at_ms))
        super()._write(bucket, level)

    def close(self) -> None:
        self._db.close()


def open_bucket_store(config: LimitsConfig) -> BucketStore:
    """The store `config.backend` names: the embedded SQLite file, or DynamoDB (boto3 imported only then)."""
    if config.backend == "dynamodb":
        from gateway.limits.dynamo import DynamoBucketStore

        d = config.dynamodb
        return DynamoBucketStore(d.table, d.region, d.endpoint_url, create_table=d.create_table)
    return SqliteBucketStore(Path(config.store).expanduser())
