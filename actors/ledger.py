"""BudgetLedgerActor: a thin Ray shell over `gateway.budgets.ledger.Ledger` with its store (SQLite or DynamoDB)."""

from __future__ import annotations

import asyncio
import logging

import ray

from gateway.budgets.backends import open_store
from gateway.budgets.gate import IDLE_S
from gateway.budgets.ledger import Lease, Ledger
from gateway.budgets.policy import Account
from gateway.budgets.store import Charge
from gateway.config import BudgetsConfig
from gateway.runtime_rules import Body, RuleKeeper, RuleSet, open_rule_store

log = logging.getLogger("gateway.budgets")


@ray.remote(num_cpus=0, max_restarts=-1)
class BudgetLedgerActor:
    """Restart-safe: settled spend and the leases the replicas hold are read back from the store (a lease is
    saved right after it changes, off the event loop; a replica's unsettled charges stay in its outbox until
    acknowledged)."""

    def __init__(self, budgets: BudgetsConfig) -> None:
        self._where = store_of(budgets)
        self._ledger = Ledger(open_store(budgets))
        self._rules = _rule_keeper(budgets)
        self._writing = asyncio.Lock()  # one store write at a time (a SQLite connection is not shared by threads)
        self._saving: asyncio.Task[None] | None = None

    def _save_leases_soon(self) -> None:
        """Save changed leases in a one-off task (a grant does not wait for the disk)."""
        if self._saving is None or self._saving.done():
            self._saving = asyncio.get_running_loop().create_task(self._save_leases())

    async def _save_leases(self) -> None:
        async with self._writing:
            rows = self._ledger.dirty_leases()
            try:
                await asyncio.to_thread(self._ledger.persist, rows)
            except Exception as exc:  # the store is down: those leases are saved with the next change
                self._ledger.redirty(rows)
                log.warning("saving %d budget leases failed (%s); retried with the next change", len(rows), exc)

    async def _load(self, account: str) -> None:
        """An account's first use reads its settled spend, in a thread and between writes (never counted twice)."""
        if not self._ledger.loaded(account):
            async with self._writing:
                if not self._ledger.loaded(account):
                    self._ledger.prime(account, await asyncio.to_thread(self._ledger.load, account))

    async def grant(self, replica: str, account: Account, want: tuple[int, int], need: tuple[int, int]) -> Lease:
        await self._load(account.id)
        lease = self._ledger.grant(replica, account, want, need)
        self._save_leases_soon()
        return lease

    async def settle(self, replica: str, charges: list[Charge]) -> int:
        """The store write runs in a thread, so grants are not queued behind a batch of DynamoDB round trips."""
        async with self._writing:  # the write and its booking in memory, with no account load in between
            fresh = await asyncio.to_thread(self._ledger.record, charges)
            count = self._ledger.apply(replica, fresh)
        self._save_leases_soon()
        return count

    async def release(self, replica: str, releases: list[tuple[str, int, int]]) -> None:
        for account, picos, tokens in releases:
            self._ledger.release(replica, account, picos, tokens)
        self._ledger.forget_idle(IDLE_S)
        self._save_leases_soon()

    async def ready(self) -> bool:
        return True

    async def status(self, account: str) -> dict[str, int | None]:
        await self._load(account)
        return self._ledger.status(account)

    async def rules(self, version: int) -> RuleSet | None:
        """The budgets set at run time, if they changed since the caller's `version`."""
        return await asyncio.to_thread(self._rules.since, version)

    async def put_rule(self, name: str, body: Body | None) -> RuleSet:
        return await asyncio.to_thread(self._rules.put, name, body)

    async def spend(self, prefix: str, after: str | None, limit: int) -> tuple[list[tuple[str, int, int]], str | None]:
        """Settled spend, a page at a time: (account, picos, tokens) rows and the cursor of the next page."""
        return await asyncio.to_thread(self._ledger.spend_page, prefix, after, limit)

    async def adopt(self, budgets: BudgetsConfig) -> str:
        """A deploy with another store (path, backend or table) takes effect: pending lease saves are written to
        the old store, then spend is booked in the new one (its totals are read from it on each account's first
        use). Returns where spend is booked now."""
        where = store_of(budgets)
        if where == self._where:
            return where
        async with self._writing:
            await asyncio.to_thread(self._ledger.persist, self._ledger.dirty_leases())
            old, self._ledger = self._ledger, Ledger(open_store(budgets))
            old.close()
            self._rules.close()
            self._rules = _rule_keeper(budgets)
        log.warning("budget ledger: the store changed from %s to %s; spend is booked there from now on",
                    self._where, where)  # fmt: skip
        self._where = where
        return where


def _rule_keeper(budgets: BudgetsConfig) -> RuleKeeper:
    dynamo = budgets.dynamodb if budgets.backend == "dynamodb" else None
    return RuleKeeper(open_rule_store("budgets", budgets.store, dynamo))


def store_of(budgets: BudgetsConfig) -> str:
    """Where settled spend is kept, as one comparable line (no secrets in it: paths, table names, endpoints)."""
    if budgets.backend == "dynamodb":
        d = budgets.dynamodb
        return f"dynamodb:{d.table}@{d.region}{'/' + d.endpoint_url if d.endpoint_url else ''}"
    return f"sqlite:{budgets.store}"
