"""BudgetLedgerActor: a thin Ray shell over `gateway.budgets.ledger.Ledger` with its store (SQLite or DynamoDB)."""

from __future__ import annotations

import asyncio

import ray

from gateway.budgets.gate import IDLE_S
from gateway.budgets.ledger import Lease, Ledger
from gateway.budgets.policy import Account
from gateway.budgets.store import Charge, open_store
from gateway.config import BudgetsConfig


@ray.remote(num_cpus=0, max_restarts=-1)
class BudgetLedgerActor:
    """Restart-safe: settled spend is read back from the store; outstanding leases start from zero (a replica
    keeps what it holds, and its unsettled charges stay in its outbox until acknowledged)."""

    def __init__(self, budgets: BudgetsConfig) -> None:
        self._ledger = Ledger(open_store(budgets))
        self._writing = asyncio.Lock()  # one store write at a time (a SQLite connection is not shared by threads)

    async def _load(self, account: str) -> None:
        """An account's first use reads its settled spend, in a thread and between writes (never counted twice)."""
        if not self._ledger.loaded(account):
            async with self._writing:
                if not self._ledger.loaded(account):
                    self._ledger.prime(account, await asyncio.to_thread(self._ledger.load, account))

    async def grant(self, replica: str, account: Account, want: tuple[int, int], need: tuple[int, int]) -> Lease:
        await self._load(account.id)
        return self._ledger.grant(replica, account, want, need)

    async def settle(self, replica: str, charges: list[Charge]) -> int:
        """The store write runs in a thread, so grants are not queued behind a batch of DynamoDB round trips."""
        async with self._writing:  # the write and its booking in memory, with no account load in between
            fresh = await asyncio.to_thread(self._ledger.record, charges)
            return self._ledger.apply(replica, fresh)

    async def release(self, replica: str, releases: list[tuple[str, int, int]]) -> None:
        for account, micros, tokens in releases:
            self._ledger.release(replica, account, micros, tokens)
        self._ledger.forget_idle(IDLE_S)

    async def status(self, account: str) -> dict[str, int | None]:
        await self._load(account)
        return self._ledger.status(account)
