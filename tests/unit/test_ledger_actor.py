"""The ledger actor's logic without Ray: a redeploy that names another store takes effect."""

from __future__ import annotations

from actors.ledger import BudgetLedgerActor, store_of
from gateway.budgets.policy import Account
from gateway.budgets.store import Charge, SqliteSpendStore
from gateway.config import BudgetsConfig

ACCOUNT = Account("turn", "t-1", "turn", limit_picos=10**12, limit_tokens=None)


def _actor(budgets: BudgetsConfig):  # type: ignore[no-untyped-def]
    return BudgetLedgerActor.__ray_actor_class__(budgets)  # the plain class Ray wraps


async def test_a_redeploy_with_another_store_books_spend_in_the_new_one(tmp_path):
    first = BudgetsConfig(store=str(tmp_path / "a.db"))
    actor = _actor(first)
    await actor.settle("r1", [Charge("c1", (ACCOUNT.id,), 1_000, 1)])
    second = BudgetsConfig(store=str(tmp_path / "b.db"))
    assert await actor.adopt(second) == store_of(second) == f"sqlite:{tmp_path / 'b.db'}"
    await actor.settle("r1", [Charge("c2", (ACCOUNT.id,), 2_000, 2)])
    assert SqliteSpendStore(tmp_path / "a.db").total(ACCOUNT.id) == (1_000, 1)
    assert SqliteSpendStore(tmp_path / "b.db").total(ACCOUNT.id) == (2_000, 2)
    assert await actor.adopt(second) == store_of(second)  # the same store again: nothing changes
    assert (await actor.status(ACCOUNT.id))["spent_picos"] == 2_000  # status reads the store in force


def test_where_spend_is_kept_names_the_backend():
    assert store_of(BudgetsConfig(backend="dynamodb")).startswith("dynamodb:llm-gateway-spend@us-east-1")
