"""The budget ledger without Ray: accounts from the policy, leases that never exceed a limit, idempotent and
durable settlement (SQLite in WAL mode)."""

from __future__ import annotations

import random
import sqlite3
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.budgets.ledger import Ledger
from gateway.budgets.policy import Account, Budget, BudgetPolicy, accounts_for
from gateway.budgets.store import Charge, SqliteSpendStore
from gateway.schema.chat import GatewayMetadata

POLICY = BudgetPolicy(budgets={
    "global-day": Budget(scope="global", window="day", limit_usd=Decimal("100")),
    "executor-day": Budget(scope="daemon", key="executor", window="day", limit_usd=Decimal("10"), limit_tokens=10**6),
    "org-month": Budget(scope="org", window="month", limit_tokens=5_000_000),
    "turn": Budget(scope="turn", window="turn", limit_usd=Decimal("0.50")),
})  # fmt: skip
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def test_a_call_spends_from_every_account_in_its_scope():
    meta = GatewayMetadata(daemon="executor", org="acme", turn_id="t-1")
    ids = {a.id for a in accounts_for(POLICY, meta, NOW)}
    assert ids == {
        "global-day|*|2026-11-28",
        "executor-day|executor|2026-11-28",
        "org-month|acme|2026-11",
        "turn|acme/t-1|turn",
    }  # fmt: skip  (a turn is its org's own)
    router = {a.id for a in accounts_for(POLICY, GatewayMetadata(daemon="router"), NOW)}
    assert router == {"global-day|*|2026-11-28"}  # another daemon, no org, no turn


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"scope": "daemon", "window": "day"}, "limit_usd and/or limit_tokens"),
        ({"scope": "daemon", "window": "turn", "limit_usd": 1}, "turn"),
        ({"scope": "global", "key": "x", "window": "day", "limit_usd": 1}, "no key"),
    ],
)
def test_budget_rules_are_checked(fields, error):
    with pytest.raises(ValueError, match=error):
        Budget(**fields)


def _ledger(tmp_path) -> Ledger:
    return Ledger(SqliteSpendStore(tmp_path / "spend.db"))


ACCOUNT = Account("turn", "t-1", "turn", limit_picos=10_000, limit_tokens=None)  # $0.01: ten calls of 1,000


def test_concurrent_replicas_never_lease_more_than_the_limit_and_leases_shrink_to_one_request(tmp_path):
    ledger = _ledger(tmp_path)
    rng = random.Random(7)
    admitted, spent = 0, 0
    local = {r: 0 for r in ("a", "b", "c")}  # what each replica still holds
    charges = 0
    for _ in range(100):  # 100 requests arriving at random replicas, each costing exactly its estimate
        replica = rng.choice(list(local))
        if local[replica] < 1_000:
            lease = ledger.grant(replica, ACCOUNT, want=(5_000, 0), need=(1_000, 0))
            local[replica] += lease.picos
        if local[replica] >= 1_000:
            local[replica] -= 1_000
            admitted += 1
            charges += 1
            spent += ledger.settle(replica, [Charge(f"c{charges}", (ACCOUNT.id,), 1_000, 30)]) * 1_000
    assert admitted <= 10 and spent <= ACCOUNT.limit_picos
    status = ledger.status(ACCOUNT.id)
    assert status["spent_picos"] == spent and status["remaining_picos"] == 10_000 - spent - status["reserved_picos"]
    assert status["remaining_picos"] < 1_000  # not even one more request fits


def test_settling_is_idempotent_and_survives_a_restart(tmp_path):
    ledger = _ledger(tmp_path)
    ledger.grant("a", ACCOUNT, want=(5_000, 0), need=(1_000, 0))
    batch = [Charge("call-1", (ACCOUNT.id, "global|*|2026-11-28"), 1_234, 56)]
    assert ledger.settle("a", batch) == 1
    assert ledger.settle("a", batch) == 0  # a replayed batch (the reply was lost) books nothing twice
    assert ledger.status(ACCOUNT.id)["spent_picos"] == 1_234 and ledger.status(ACCOUNT.id)["reserved_picos"] == 3_766
    reborn = _ledger(tmp_path)  # the actor restarted: settled spend is all there, leases are not
    assert reborn.status(ACCOUNT.id)["spent_picos"] == 1_234
    assert reborn.status("global|*|2026-11-28")["spent_tokens"] == 56
    mode = sqlite3.connect(tmp_path / "spend.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_released_capacity_can_be_leased_again(tmp_path):
    ledger = _ledger(tmp_path)
    first = ledger.grant("a", ACCOUNT, want=(10_000, 0), need=(1_000, 0))
    assert first.picos == 5_000  # at most half of what is left for one holder
    assert ledger.grant("b", ACCOUNT, want=(10_000, 0), need=(1_000, 0)).picos == 1_250  # 5,000 left, two holders
    assert ledger.grant("b", ACCOUNT, want=(10_000, 0), need=(4_000, 0)).refused  # 3,750 left < 4,000 needed
    ledger.release("a", ACCOUNT.id, 5_000, 0)
    assert ledger.grant("b", ACCOUNT, want=(10_000, 0), need=(4_000, 0)).picos == 4_000


def test_an_idle_account_is_forgotten_only_without_leases_and_its_spend_is_read_back_when_used_again(tmp_path):
    ledger = _ledger(tmp_path)
    ledger.grant("a", ACCOUNT, want=(5_000, 0), need=(1_000, 0))
    ledger.settle("a", [Charge("call-1", (ACCOUNT.id,), 1_000, 10)])
    later = time.monotonic() + 3600
    assert ledger.forget_idle(60, now=later) == 0  # a replica still holds 4,000 of it
    ledger.release("a", ACCOUNT.id, 4_000, 0)
    assert ledger.forget_idle(60, now=later) == 1 and not ledger.loaded(ACCOUNT.id)
    ledger.settle("b", [Charge("call-2", (ACCOUNT.id,), 500, 5)])  # booked in the store while forgotten
    assert ledger.grant("a", ACCOUNT, want=(10_000, 0), need=(1_000, 0)).remaining_picos == 10_000 - 1_500
    assert ledger.status(ACCOUNT.id)["spent_tokens"] == 15  # each charge counted once


def test_the_shipped_budgets_load_against_the_default_catalog_and_a_bad_downgrade_target_is_named(tmp_path):
    from gateway.budgets.policy import load_budgets
    from gateway.config import ConfigError, load_config

    catalog = load_config().models
    shipped = load_budgets("policies/budgets.yaml", catalog)
    assert {b.scope for b in shipped.budgets.values()} == {"global", "daemon", "org", "user", "turn"}
    bad = tmp_path / "budgets.yaml"
    bad.write_text("budgets:\n  r: {scope: daemon, key: router, window: day, limit_usd: 1, on_exceed: downgrade,"
                   " downgrade_to: [gpt-4o-mini, text-embedding-3-small]}\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"budgets\.r\.downgrade_to\.1: not a chat model"):
        load_budgets(bad, catalog)


def test_a_restarted_ledger_knows_the_leases_replicas_still_hold_and_drops_stale_ones(tmp_path):
    ledger = _ledger(tmp_path)
    assert ledger.grant("a", ACCOUNT, want=(10_000, 0), need=(1_000, 0)).picos == 5_000
    assert ledger.grant("b", ACCOUNT, want=(10_000, 0), need=(1_000, 0)).picos == 1_250
    ledger.settle("a", [Charge("call-1", (ACCOUNT.id,), 1_000, 0)])  # saves the leases too: a 4,000, b 1,250
    reborn = _ledger(tmp_path)
    assert reborn.status(ACCOUNT.id)["reserved_picos"] == 5_250
    # what is left for anyone: 10,000 - 1,000 spent - 5,250 still held (before: 9,000, an overshoot of 5,250)
    assert reborn.grant("c", ACCOUNT, want=(10_000, 0), need=(1_000, 0)).remaining_picos == 3_750
    db = sqlite3.connect(tmp_path / "spend.db")
    db.execute("UPDATE leases SET at = at - 3600 WHERE replica = 'b'")  # b stopped saving an hour ago: gone
    db.commit()
    assert _ledger(tmp_path).status(ACCOUNT.id)["reserved_picos"] == 4_000


def test_spend_booked_in_the_first_store_layout_is_carried_over(tmp_path):
    old = sqlite3.connect(tmp_path / "spend.db")
    old.execute("CREATE TABLE charges (id TEXT NOT NULL, account TEXT NOT NULL, micros INTEGER NOT NULL,"
                " tokens INTEGER NOT NULL, at REAL NOT NULL, PRIMARY KEY (id, account))")  # fmt: skip
    old.executemany("INSERT INTO charges VALUES (?, ?, ?, ?, 0)",
                    [("c1", "a", 10, 1), ("c1", "b", 10, 1), ("c2", "a", 5, 2)])  # fmt: skip
    old.commit()
    old.close()
    store = SqliteSpendStore(tmp_path / "spend.db")
    micro = 10**6  # that layout kept micro-dollars; the store now keeps pico-dollars
    assert store.totals() == {"a": (15 * micro, 3), "b": (10 * micro, 1)}
    assert store.record([Charge("c1", ("a", "b"), 10, 1), Charge("c3", ("b",), 1, 1)]) == [Charge("c3", ("b",), 1, 1)]
    assert SqliteSpendStore(tmp_path / "spend.db").total("b") == (10 * micro + 1, 2)  # and it migrates only once


def test_a_store_that_kept_micro_dollars_is_converted_to_pico_dollars_once(tmp_path):
    old = sqlite3.connect(tmp_path / "spend.db")
    old.execute("CREATE TABLE spend_charges (id TEXT PRIMARY KEY, accounts TEXT NOT NULL, micros INTEGER NOT NULL,"
                " tokens INTEGER NOT NULL, at REAL NOT NULL)")  # fmt: skip
    old.execute("CREATE TABLE spend_totals (account TEXT PRIMARY KEY, micros INTEGER NOT NULL,"
                " tokens INTEGER NOT NULL)")  # fmt: skip
    old.execute("CREATE TABLE leases (account TEXT NOT NULL, replica TEXT NOT NULL, micros INTEGER NOT NULL,"
                " tokens INTEGER NOT NULL, at REAL NOT NULL, PRIMARY KEY (account, replica))")  # fmt: skip
    old.execute("INSERT INTO spend_charges VALUES ('c1', '[\"a\"]', 368, 10, 0)")
    old.execute("INSERT INTO spend_totals VALUES ('a', 368, 10)")
    old.execute("INSERT INTO leases VALUES ('a', 'r1', 1000, 0, 0)")
    old.commit()
    old.close()
    store = SqliteSpendStore(tmp_path / "spend.db")
    assert store.total("a") == (368 * 10**6, 10) and store.leases("a")["r1"][:2] == (1000 * 10**6, 0)
    store.record([Charge("c2", ("a",), 351_900_000, 5)])  # $0.0003519, exactly
    assert SqliteSpendStore(tmp_path / "spend.db").total("a") == (368 * 10**6 + 351_900_000, 15)  # converted once


def test_money_is_booked_exactly_as_billed_and_shown_without_rounding(tmp_path):
    """23 gpt-4o-mini calls billed $0.0003519 in all are booked as $0.0003519 (rounding each charge up to the
    micro-dollar booked $0.000368); a 10-token embedding at $0.02/M is $0.0000002, not $0.000001."""
    from gateway.budgets.gate import to_picos
    from gateway.budgets.policy import usd_text

    costs = [Decimal("0.0000153")] * 23  # each call: 34 in x $0.15/M + 17 out x $0.60/M
    assert sum(costs) == Decimal("0.0003519")
    ledger = _ledger(tmp_path)
    ledger.settle("a", [Charge(f"c{i}", (ACCOUNT.id,), to_picos(c), 51) for i, c in enumerate(costs)])
    assert usd_text(ledger.status(ACCOUNT.id)["spent_picos"]) == "0.0003519"
    assert to_picos(Decimal(10) * Decimal("0.02") / 10**6) == 200_000 and usd_text(200_000) == "0.0000002"
    assert usd_text(0) == "0" and usd_text(10**12) == "1"


async def test_a_call_that_fits_waits_out_partial_grants_instead_of_being_refused():
    """Other replicas hold most of the budget and give it back bit by bit: each grant covers only part of what
    the call misses. The call fits, so it waits for enough grants; it is not refused as over budget."""
    from gateway.budgets.gate import BudgetGate
    from gateway.budgets.ledger import Lease

    account = Account("turn", "t-9", "turn", limit_picos=1_000_000, limit_tokens=None)
    gate = BudgetGate(chunk_picos=1, chunk_tokens=1)
    grants = []

    async def granter(acct, want, need):
        grants.append(need)
        return Lease(acct.id, max(1, need[0] // 4), 0, remaining_picos=1_000_000)  # a quarter of what is missing

    gate.granter = granter
    reservation = await gate.reserve([account], 1_000, 0)
    assert reservation.picos == 1_000 and len(grants) > 3
