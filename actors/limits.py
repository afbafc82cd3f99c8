"""LimitOwnerActor: a thin Ray shell over `gateway.limits.owner.BucketOwner` with its store (SQLite or DynamoDB)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray

from gateway.config import LimitsConfig
from gateway.limits.bucket import BucketSpec
from gateway.limits.owner import BucketOwner, Grant
from gateway.limits.store import open_bucket_store
from gateway.runtime_rules import Body, RuleKeeper, RuleSet, open_rule_store


@ray.remote(num_cpus=0, max_restarts=-1)
class LimitOwnerActor:
    """Restart-safe: every level is written to the store before a grant is answered, so a restarted owner goes on
    from what it handed out. Store I/O runs on one thread of its own (never on the event loop; in order)."""

    def __init__(self, limits: LimitsConfig) -> None:
        self._owner = BucketOwner(open_bucket_store(limits))
        dynamo = limits.dynamodb if limits.backend == "dynamodb" else None
        self._rules = RuleKeeper(open_rule_store("limits", limits.store, dynamo))
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="limits-store")
        # the rules have a thread of their own: every replica asks for them each sync, and a bucket write that
        # waits for the disk must not hold those answers up (nor they the grants)
        self._rules_io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="limits-rules")

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def grant(self, replica: str, bucket: str, spec: BucketSpec, want: int, need: int) -> Grant:
        return await self._run(self._owner.grant, replica, bucket, spec, want, need)  # type: ignore[no-any-return]

    async def grant_many(self, replica: str, asks: list[tuple[str, BucketSpec, int, int]]) -> list[Grant]:
        """The background top-ups of one sync, in one call."""
        return await self._run(lambda: [self._owner.grant(replica, *ask) for ask in asks])  # type: ignore[no-any-return]

    async def give(self, replica: str, returns: list[tuple[str, BucketSpec, int]]) -> list[int]:
        """Balances going back (positive) and debts (negative); the levels after, in order."""
        return await self._run(lambda: [self._owner.give(replica, b, s, a) for b, s, a in returns])  # type: ignore[no-any-return]

    async def alive(self, replica: str, holdings: dict[str, int]) -> None:
        await self._run(self._owner.alive, replica, holdings)

    async def status(self, bucket: str, spec: BucketSpec) -> dict[str, int]:
        return await self._run(self._owner.status, bucket, spec)  # type: ignore[no-any-return]

    async def rules(self, version: int) -> RuleSet | None:
        """The rules set at run time, if they changed since the caller's `version`."""
        return await asyncio.get_running_loop().run_in_executor(self._rules_io, self._rules.since, version)

    async def put_rule(self, name: str, body: Body | None) -> RuleSet:
        return await asyncio.get_running_loop().run_in_executor(self._rules_io, self._rules.put, name, body)

    async def ready(self) -> bool:
        return True
