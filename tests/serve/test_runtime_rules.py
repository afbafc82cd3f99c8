"""The admin API a budget system feeds, end to end on the two-replica gateway: a limit and a budget set at run time
hold on every replica within a sync interval and go when deleted; bodies are validated like the files; only
admins set them; settled spend comes out as JSON lines, page by page, equal to what the answers cost."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from decimal import Decimal

import httpx
import pytest

from tests.serve.keys import ADMIN, AUTH

pytestmark = pytest.mark.ray


def _everywhere(url: str, kind: str, version: int) -> None:
    """Until ten answers in a row (both replicas, as the proxy spreads them) have the rules of `version`."""
    stop, streak = time.monotonic() + 15, 0
    while streak < 10:
        assert time.monotonic() < stop, f"{kind} rules of version {version} did not reach every replica"
        r = httpx.get(f"{url}/v1/gateway/{kind}", headers=ADMIN)
        assert r.status_code == 200, r.text
        streak = streak + 1 if r.json()["version"] >= version else 0


def _org_key(url: str, org: str) -> str:
    r = httpx.post(f"{url}/v1/gateway/keys", json={"name": f"rt-{org}", "org": org}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()["key"]


async def _burst(url: str, headers: dict, n: int, model: str = "gpt-4o-mini") -> list[httpx.Response]:
    body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "runtime rules"}]}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        return await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(n)))


def test_a_limit_set_at_run_time_holds_on_every_replica_and_goes_when_deleted(gateway_url):
    org = f"rt-{uuid.uuid4().hex[:6]}"
    key = {"authorization": f"Bearer {_org_key(gateway_url, org)}"}
    put = httpx.put(f"{gateway_url}/v1/gateway/limits/{org}-rpm", json={"scope": "org", "key": org, "rpm": 3},
                    headers=ADMIN)  # fmt: skip
    assert put.status_code == 200, put.text
    assert put.json()["rule"] == {"scope": "org", "key": org, "rpm": 3} and put.json()["source"] == "api"
    _everywhere(gateway_url, "limits", put.json()["version"])
    started = time.monotonic()
    answers = asyncio.run(_burst(gateway_url, key, 12))
    ok = [r for r in answers if r.status_code == 200]
    # never more than the rule allows, whichever replica answered (a replica without it would let its share through);
    # exactly 3 with the owner up, fewer while a replica serves from its fallback (after an earlier test's kill)
    assert 1 <= len(ok) <= 3 + int((time.monotonic() - started) / 20)  # a request refills every 20 s
    refused = [r for r in answers if r.status_code == 429]
    assert len(ok) + len(refused) == 12
    assert f"org `{org}`" in refused[0].json()["error"]["message"]
    status = httpx.get(f"{gateway_url}/v1/gateway/limits/org/{org}", headers=ADMIN).json()["limits"]
    assert [(s["limit"], s["capacity"]) for s in status] == [(f"{org}-rpm", 3)]
    listing = httpx.get(f"{gateway_url}/v1/gateway/limits", headers=ADMIN).json()["limits"]
    assert {"name": f"{org}-rpm", "source": "api", "rule": put.json()["rule"]} in listing

    gone = httpx.delete(f"{gateway_url}/v1/gateway/limits/{org}-rpm", headers=ADMIN)
    assert gone.status_code == 200 and gone.json()["source"] == "off"
    _everywhere(gateway_url, "limits", gone.json()["version"])
    assert [r.status_code for r in asyncio.run(_burst(gateway_url, key, 4))] == [200] * 4  # the empty bucket is gone
    assert httpx.delete(f"{gateway_url}/v1/gateway/limits/{org}-rpm", headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    ("kind", "name", "body", "param"),
    [
        ("limits", "bad", {"scope": "org", "rpm": 0}, "rpm"),
        ("limits", "bad", {"scope": "team", "rpm": 5}, "scope"),
        ("limits", "bad", {"scope": "org", "rpm": 5, "burst": 3}, "burst"),
        ("limits", "bad", [1, 2], "body"),
        ("limits", "-bad", {"scope": "org", "rpm": 5}, "name"),
        ("budgets", "bad", {"scope": "org", "window": "day", "limit_usd": 1, "downgrade_to": ["x"]}, "downgrade_to.0"),
        ("budgets", "bad", {"scope": "org", "window": "week", "limit_usd": 1}, "window"),
    ],
)
def test_a_rule_is_validated_like_the_files_naming_the_field(gateway_url, kind, name, body, param):
    r = httpx.put(f"{gateway_url}/v1/gateway/{kind}/{name}", json=body, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param or r.json()["error"]["message"].startswith(param)
    listing = httpx.get(f"{gateway_url}/v1/gateway/{kind}", headers=ADMIN).json()[kind]
    assert name not in {row["name"] for row in listing}


def test_only_an_admin_sets_or_reads_rules_and_spend(gateway_url):
    user_key = {"authorization": f"Bearer {_org_key(gateway_url, 'rt-nonadmin')}"}
    for method, path in [("PUT", "/v1/gateway/limits/x"), ("DELETE", "/v1/gateway/budgets/x"),
                         ("GET", "/v1/gateway/limits"), ("GET", "/v1/gateway/budgets/spend")]:  # fmt: skip
        r = httpx.request(method, f"{gateway_url}{path}", json={"scope": "org", "rpm": 1}, headers=user_key)
        assert r.status_code == 403, (method, path, r.text)
    assert httpx.put(f"{gateway_url}/v1/gateway/limits/x", json={"scope": "org", "rpm": 1}).status_code == 401


def test_a_budget_set_at_run_time_refuses_and_its_spend_is_exported_page_by_page(gateway_url):
    name = f"rt-users-{uuid.uuid4().hex[:6]}"
    users = [f"rt-user-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    tiny = f"rt-tiny-{uuid.uuid4().hex[:6]}"
    rules = {name: {"scope": "user", "window": "day", "limit_usd": "1"},  # every user, one account each
             tiny: {"scope": "user", "key": users[0], "window": "day", "limit_usd": "0.000008"}}  # fmt: skip
    try:
        version = 0
        for rule, body in rules.items():
            put = httpx.put(f"{gateway_url}/v1/gateway/budgets/{rule}", json=body, headers=ADMIN)
            assert put.status_code == 200, put.text
            version = put.json()["version"]
        _everywhere(gateway_url, "budgets", version)
        cost: dict[str, int] = {}
        for user in users:
            answers = asyncio.run(_burst(gateway_url, {**AUTH, "x-gateway-user": user}, 3))
            ok = [a for a in answers if a.status_code == 200]
            if user == users[0]:  # ~5 micro-dollars reserved per call: the tiny budget fits one
                assert 1 <= len(ok) < 3
                refused = [a for a in answers if a.status_code != 200]
                assert refused[0].status_code == 402 and tiny in refused[0].json()["error"]["message"]
            else:
                assert len(ok) == 3
            cost[f"tests/{user}"] = sum(math.ceil(Decimal(a.headers["x-gateway-cost-usd"]) * 10**12) for a in ok)
        rows = _settled(gateway_url, name, cost)
        assert {r["key"]: Decimal(r["spent_usd"]) * 10**12 for r in rows} == cost  # every answer, at its cost
        assert all(r["budget"] == name and r["limit_usd"] == "1" and r["spent_tokens"] > 0 for r in rows)
        one = httpx.get(f"{gateway_url}/v1/gateway/budgets/spend", params={"budget": name, "key": f"tests/{users[1]}"},
                        headers=ADMIN)  # fmt: skip
        assert [json.loads(line)["key"] for line in one.text.splitlines()] == [f"tests/{users[1]}"]
        bad = httpx.get(f"{gateway_url}/v1/gateway/budgets/spend", params={"limit": "0"}, headers=ADMIN)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
    finally:
        for rule in rules:
            httpx.delete(f"{gateway_url}/v1/gateway/budgets/{rule}", headers=ADMIN)


def _settled(url: str, budget: str, cost: dict[str, int]) -> list[dict]:
    """The export of `budget`, two rows a page, once it holds every account's spend (replicas settle in batches)."""
    stop = time.monotonic() + 15
    while True:
        rows, pages, params = [], 0, {"budget": budget, "limit": "2"}
        while True:
            r = httpx.get(f"{url}/v1/gateway/budgets/spend", params=params, headers=ADMIN)
            assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson", r.text
            page = [json.loads(line) for line in r.text.splitlines()]
            assert len(page) <= 2
            rows, pages = rows + page, pages + 1
            if "x-gateway-next" not in r.headers:
                break
            assert 'rel="next"' in r.headers["link"]
            params = {**params, "after": r.headers["x-gateway-next"]}
        spent = {row["key"]: Decimal(row["spent_usd"]) * 10**12 for row in rows}
        if spent == cost or time.monotonic() > stop:
            assert pages >= 2 and len(rows) == len({r["account"] for r in rows})  # paged, each account once
            return rows
        time.sleep(0.1)
