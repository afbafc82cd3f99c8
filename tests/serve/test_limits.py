"""Rate limits end to end on the two-replica gateway: a key's rpm over a burst spread across both replicas, the
headers and 429s on the OpenAI and Anthropic APIs, token limits reconciled with streamed output, concurrency
slots on streams, per-user limits, the status endpoint, and the bucket owner killed mid-burst."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
import ray
from openai import AsyncOpenAI, OpenAI, RateLimitError

from serve_app import NAMESPACE
from tests.serve.keys import ADMIN, AUTH

pytestmark = pytest.mark.ray


def _key(url: str, limits: dict, **spec) -> tuple[str, str]:
    body = {"name": f"lim-{uuid.uuid4().hex[:6]}", "org": "tests", "limits": limits, **spec}
    r = httpx.post(f"{url}/v1/gateway/keys", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()["key"], r.json()["key_id"]


def _chat(max_tokens: int = 5, stream: bool = False, model: str = "gpt-4o-mini") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
            "stream": stream}  # fmt: skip


async def _burst(url: str, key: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as client:
        return await asyncio.gather(*(client.post("/v1/chat/completions", json=_chat()) for _ in range(n)))


def test_a_key_with_rpm_10_gets_exactly_10_of_a_burst_of_30_over_both_replicas(gateway_url):
    key, key_id = _key(gateway_url, {"rpm": 10})
    started = time.monotonic()
    answers = asyncio.run(_burst(gateway_url, key, 30))
    elapsed = time.monotonic() - started
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(ok) + len(refused) == 30
    assert 10 <= len(ok) <= 10 + int(elapsed / 6)  # a request refills every 6 s
    body = refused[0].json()["error"]
    assert body["type"] == "rate_limit_error" and body["code"] == "requests_per_minute_exceeded"
    assert f"key `{key_id}`" in body["message"] and "10 requests per minute" in body["message"]
    r = refused[0]
    assert r.headers["x-ratelimit-limit-requests"] == "10" and r.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(r.headers["retry-after"]) <= 6 and r.headers["x-ratelimit-reset-requests"].endswith("s")
    remaining = sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in ok)
    assert remaining[0] < remaining[-1]  # it decreases as the bucket empties
    time.sleep(int(r.headers["retry-after"]))  # what the client is told to wait: then it is admitted again
    again = asyncio.run(_burst(gateway_url, key, 1))[0]
    assert again.status_code == 200, again.text


def test_the_official_sdk_sees_a_429_it_can_handle(gateway_url):
    key, _ = _key(gateway_url, {"rpm": 1})
    with OpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0) as client:
        client.chat.completions.create(**_chat())
        with pytest.raises(RateLimitError) as info:
            client.chat.completions.create(**_chat())
    assert info.value.response.headers["retry-after"]


def test_anthropic_callers_get_anthropic_headers_and_error_format(gateway_url):
    key, _ = _key(gateway_url, {"rpm": 1, "tpm": 100_000})
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    body = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    first = httpx.post(f"{gateway_url}/v1/messages", json=body, headers=headers, timeout=20)
    assert first.status_code == 200, first.text
    assert first.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert first.headers["anthropic-ratelimit-tokens-limit"] == "100000"
    assert first.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    second = httpx.post(f"{gateway_url}/v1/messages", json=body, headers=headers, timeout=20)
    assert second.status_code == 429
    assert second.json()["type"] == "error" and second.json()["error"]["type"] == "rate_limit_error"
    assert second.headers["retry-after"] and second.headers["anthropic-ratelimit-requests-remaining"] == "0"


def test_a_tpm_limit_counts_what_streams_used_not_their_allowance(gateway_url):
    """Each call reserves its prompt plus max_tokens (~1 010 of a 3 000 bucket), but uses a few dozen: reconciled,
    six in a row fit (unreconciled, the third would be refused)."""
    key, _ = _key(gateway_url, {"tpm": 3000})
    with OpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0) as client:
        for _ in range(6):
            raw = client.chat.completions.with_raw_response.create(**_chat(1000, stream=True))
            assert raw.headers["x-ratelimit-limit-tokens"] == "3000"
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
            assert text


def test_a_concurrency_limit_holds_streams_and_frees_their_slots(gateway_url):
    key, _ = _key(gateway_url, {"concurrent": 2})

    async def run() -> None:
        async with AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0) as client:
            streams = [await client.chat.completions.create(**_chat(40, True, "paced-mini")) for _ in range(2)]
            for s in streams:  # both under way
                await anext(aiter(s))
            with pytest.raises(RateLimitError) as info:
                await client.chat.completions.create(**_chat(5, True))
            assert info.value.body["code"] == "concurrency_exceeded"
            for s in streams:
                await s.close()
            deadline = time.monotonic() + 15  # the slots come back (idle leases return to the owner)
            while True:
                try:
                    await client.chat.completions.create(**_chat(5))
                    return
                except RateLimitError:
                    assert time.monotonic() < deadline, "the slots of finished streams never came back"
                    await asyncio.sleep(0.5)

    asyncio.run(run())


def test_each_user_of_a_limited_org_has_its_own_bucket(gateway_url):
    key, _ = _key(gateway_url, {"rpm": 1000}, org="limited-org", may_set_user=True)
    with OpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0) as client:
        for _ in range(3):
            client.chat.completions.create(**_chat(), extra_headers={"x-gateway-user": "alice"})
        with pytest.raises(RateLimitError) as info:
            client.chat.completions.create(**_chat(), extra_headers={"x-gateway-user": "alice"})
        assert "user `limited-org/alice`" in info.value.body["message"]
        client.chat.completions.create(**_chat(), extra_headers={"x-gateway-user": "bob"})  # bob's own bucket


def test_the_status_endpoint_shows_a_keys_buckets_to_itself_and_to_admins_only(gateway_url):
    key, key_id = _key(gateway_url, {"rpm": 50, "tpm": 9000})
    mine = {"authorization": f"Bearer {key}"}
    httpx.post(f"{gateway_url}/v1/chat/completions", json=_chat(), headers=mine, timeout=20).raise_for_status()
    r = httpx.get(f"{gateway_url}/v1/gateway/limits/key/{key_id}", headers=mine)
    assert r.status_code == 200, r.text
    rows = {row["quantity"]: row for row in r.json()["limits"]}
    assert rows["requests"]["capacity"] == 50 and rows["tokens"]["capacity"] == 9000
    assert rows["requests"]["refill_per_minute"] == 50 and rows["requests"]["debt"] == 0
    assert rows["requests"]["level"] + rows["requests"]["leased"] <= 50
    assert rows["requests"]["level"] < 50  # a lease went to a replica
    admin = httpx.get(f"{gateway_url}/v1/gateway/limits/key/{key_id}", headers=ADMIN)
    assert admin.status_code == 200 and admin.json()["limits"]
    other, _ = _key(gateway_url, {"rpm": 5})
    r = httpx.get(f"{gateway_url}/v1/gateway/limits/key/{key_id}", headers={"authorization": f"Bearer {other}"})
    assert r.status_code == 403
    unlimited = httpx.get(f"{gateway_url}/v1/gateway/limits/key/{uuid.uuid4().hex[:16]}", headers=AUTH)
    assert unlimited.status_code in (403, 404)


def test_killing_the_bucket_owner_mid_burst_keeps_the_key_bounded(gateway_url):
    """The owner dies (Ray restarts it; its levels are read back from its store): replicas serve meanwhile from
    local buckets of capacity / replicas, so the key gets at most its limit plus that fallback — never unlimited."""
    key, _ = _key(gateway_url, {"rpm": 10})
    started = time.monotonic()
    first = asyncio.run(_burst(gateway_url, key, 6))
    ray.kill(ray.get_actor("limits", namespace=NAMESPACE), no_restart=False)
    rest = asyncio.run(_burst(gateway_url, key, 40))
    elapsed = time.monotonic() - started
    ok = sum(r.status_code == 200 for r in first + rest)
    assert all(r.status_code in (200, 429) for r in first + rest)
    assert 10 <= ok <= 10 + 10 + int(elapsed / 6) * 2  # the limit, plus one local bucket's worth per replica
