"""BudgetLedgerActor: a thin Ray shell over `gateway.budgets.ledger.Ledger` with its SQLite store."""

from __future__ import annotations

from pathlib import Path

import ray

from gateway.budgets.ledger import Lease, Ledger
from gateway.budgets.policy import Account
from gateway.budgets.store import Charge, SqliteSpendStore


@ray.remote(num_cpus=0, max_restarts=-1)
class BudgetLedgerActor:
    """Restart-safe: settled spend is read back from the store; outstanding leases start from zero (a replica
    keeps what it holds, and its unsettled charges stay in its outbox until acknowledged)."""

    def __init__(self, store_path: str) -> None:
        self._ledger = Ledger(SqliteSpendStore(Path(store_path).expanduser()))

    async def grant(self, replica: str, account: Account, want: tuple[int, int], need: tuple[int, int]) -> Lease:
        return self._ledger.grant(replica, account, want, need)

    async def settle(self, replica: str, charges: list[Charge]) -> int:
        return self._ledger.settle(replica, charges)

    async def status(self, account: str) -> dict[str, int | None]:
        return self._ledger.status(account)
