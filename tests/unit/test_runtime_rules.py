"""Rules set at run time: kept in SQLite across a restart and in DynamoDB across clusters (moto, real HTTP), read
again by an owner after REREAD_S, laid over a file's rules on a replica (runtime wins, `off` removes, a body
this build cannot read is skipped); and the settled-spend export, paged, from both spend stores."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from gateway.budgets.dynamo import DynamoSpendStore
from gateway.budgets.policy import Budget, budget_rule
from gateway.budgets.store import Charge, SqliteSpendStore
from gateway.config import DynamoConfig, ModelEntry
from gateway.limits.policy import LimitRule
from gateway.runtime_rules import REREAD_S, DynamoRuleStore, Overlay, RuleKeeper, RuleSet, SqliteRuleStore
from gateway.schema import GatewayError
from tests.moto_support import REGION, moto_server


@pytest.fixture(scope="module")
def dynamo_url(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("aws")) as url:
        yield url


def _dynamo(url: str, table: str, kind: str = "limits") -> DynamoRuleStore:
    return DynamoRuleStore(DynamoConfig(table=table, region=REGION, endpoint_url=url, create_table=True), kind)


def test_sqlite_rules_survive_a_restart_and_each_change_moves_the_version(tmp_path):
    store = SqliteRuleStore(tmp_path / "limits.db", "limits")
    assert store.read() == RuleSet()
    first = store.put("acme", {"scope": "org", "key": "acme", "rpm": 60})
    second = store.put("old", None)
    assert second.version == first.version + 1
    store.close()
    reopened = SqliteRuleStore(tmp_path / "limits.db", "limits")
    assert reopened.read() == RuleSet(2, {"acme": {"scope": "org", "key": "acme", "rpm": 60}, "old": None})
    assert SqliteRuleStore(tmp_path / "limits.db", "budgets").read() == RuleSet()  # kinds kept apart


def test_two_clusters_sharing_a_dynamodb_table_see_each_others_rules(dynamo_url):
    table = f"rules-{uuid.uuid4().hex[:8]}"
    clock = [0.0]
    a = RuleKeeper(_dynamo(dynamo_url, table), monotonic=lambda: clock[0])
    b = RuleKeeper(_dynamo(dynamo_url, table), monotonic=lambda: clock[0])
    assert b.since(0) is None  # nothing set yet: version 0 is current
    a.put("acme", {"scope": "org", "key": "acme", "rpm": 60})
    b.put("beta", {"scope": "org", "key": "beta", "tpm": 1000})  # a concurrent writer loses nothing
    seen = b.since(0)
    assert seen is not None and set(seen.rules) == {"acme", "beta"} and seen.version == 2
    assert a.since(1) is None  # a's copy is still the one it wrote (version 1) until it reads again...
    clock[0] += REREAD_S + 1
    later = a.since(1)
    assert later is not None and later.rules == seen.rules  # ...then it sees b's rule
    a.put("acme", None)
    clock[0] += REREAD_S + 1
    assert b.since(2).rules["acme"] is None  # switched off for every cluster


def test_the_overlay_lays_runtime_rules_over_the_files():
    adopted: list[dict] = []
    file = {"per-key": LimitRule(scope="key", rpm=100), "acme": LimitRule(scope="org", key="acme", rpm=10)}
    overlay = Overlay("limits", file, LimitRule.model_validate, adopted.append)
    runtime = {"acme": {"scope": "org", "key": "acme", "rpm": 50}, "per-key": None,
               "new": {"scope": "user", "tpm": 500}, "broken": {"scope": "org", "rpm": 0}}  # fmt: skip
    overlay.install(RuleSet(3, runtime))
    expected = {"acme": LimitRule(scope="org", key="acme", rpm=50), "new": LimitRule(scope="user", tpm=500)}
    assert adopted[-1] == expected
    assert [overlay.source(n) for n in ("acme", "per-key", "new", "broken", "nope")] == ["api", "off", "api", "none",
                                                                                       "none"]  # fmt: skip
    overlay.install(RuleSet(2, {}))  # an older set (a slow answer) changes nothing
    assert overlay.version == 3 and len(adopted) == 1


def test_a_budget_body_is_validated_like_the_file_naming_the_field():
    parse = budget_rule({"gpt-4o-mini": ModelEntry(provider="openai", upstream="gpt-4o-mini"),
                         "emb": ModelEntry(provider="openai", upstream="e", kind="embedding")})  # fmt: skip
    ok = parse({"scope": "org", "key": "acme", "window": "day", "limit_usd": "5", "on_exceed": "downgrade",
                "downgrade_to": ["gpt-4o-mini"]})  # fmt: skip
    assert ok.limit_usd == Decimal("5")
    with pytest.raises(GatewayError) as info:
        parse({"scope": "org", "window": "day", "limit_usd": 1, "downgrade_to": ["gpt-4o-mini", "emb"]})
    assert info.value.to_info().message.startswith("downgrade_to.1: not a chat model")
    with pytest.raises(ValueError):
        parse({"scope": "org", "window": "day"})  # neither limit_usd nor limit_tokens
    assert isinstance(ok, Budget)


BATCH = [Charge(f"c{i}", (f"org-day|org{i % 3}|2026-12-04", "global-day|*|2026-12-04"), 10**9 * (i + 1), 10 + i)
         for i in range(7)]  # fmt: skip


def _pages(store, prefix: str, limit: int) -> list[list[tuple[str, int, int]]]:
    pages, after = [], None
    while True:
        rows, after = store.totals_page(prefix, after, limit)
        pages.append(rows)
        if after is None:
            return pages


def _expected() -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = {}
    for c in BATCH:
        for a in c.accounts:
            t = out.setdefault(a, [0, 0])
            t[0] += c.picos
            t[1] += c.tokens
    return {a: (m, t) for a, (m, t) in out.items()}


@pytest.mark.parametrize("backend", ["sqlite", "dynamodb"])
def test_settled_spend_pages_cover_every_account_once(backend, tmp_path, dynamo_url):
    if backend == "sqlite":
        store = SqliteSpendStore(tmp_path / "spend.db")
    else:
        store = DynamoSpendStore(f"spend-{uuid.uuid4().hex[:8]}", REGION, dynamo_url, create_table=True)
    store.record(BATCH)
    pages = _pages(store, "org-day|", 2)
    rows = [row for page in pages for row in page]
    assert all(len(page) <= 2 for page in pages) and len(pages) >= 2
    assert {a: (m, t) for a, m, t in rows} == {a: v for a, v in _expected().items() if a.startswith("org-day|")}
    assert len(rows) == 3  # each account once
    everything = [row for page in _pages(store, "", 100) for row in page]
    assert {a: (m, t) for a, m, t in everything} == _expected()
