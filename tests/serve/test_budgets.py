"""End to end: a budget shared by two replicas through the ledger's leases; spend booked exactly."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from gateway.config import ModelEntry
from gateway.pricing import Pricer
from gateway.schema import STREAM_EVENT_ADAPTER, ChatRequest, Usage
from gateway.tokens import TokenEstimator
from tests.serve.keys import AUTH

pytestmark = pytest.mark.ray
USER = "budget-user"


def _ask(gateway_url: str, i: int) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": f"budget call {i}"}]}
    return httpx.post(
        f"{gateway_url}/v1/chat/completions", json=body, headers={**AUTH, "x-gateway-user": USER}, timeout=30
    )


def test_a_hundred_parallel_calls_against_a_budget_that_fits_ten(gateway_url, emulator):
    with ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(lambda i: _ask(gateway_url, i), range(100)))
    ok = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    assert 5 <= len(ok) <= 10 and len(ok) + len(refused) == 100  # never more than the limit fits
    for r in refused:
        error = r.json()["error"]
        assert r.status_code == 402 and error["type"] == "budget_exceeded"
        assert "budget-user-day" in error["message"] and "estimated at" in error["message"]
    booked = sum(math.ceil(Decimal(a.headers["x-gateway-cost-usd"]) * 10**12) for a in ok)
    stop = time.monotonic() + 10
    while True:  # replicas settle in batches, within a sync interval or two
        status = _status(gateway_url, "user", USER)
        if Decimal(status["spent_usd"]) * 10**12 == booked or time.monotonic() > stop:
            break
        time.sleep(0.1)
    assert Decimal(status["spent_usd"]) * 10**12 == booked  # every answer booked, at its actual cost
    assert Decimal(status["spent_usd"]) <= Decimal(status["limit_usd"])
    ids = {r.request_id for r in emulator.recorder.requests if "budget call" in str(r.body)}
    billed = [b for b in emulator.recorder.billing if b.request_id in ids]
    assert len(billed) == len(ok)  # refused calls never reached the provider
    pricer = Pricer()
    usages = [Usage(input_tokens=b.input_tokens, output_tokens=b.output_tokens) for b in billed]
    from_billing = sum(math.ceil(pricer.cost("openai", "gpt-4o-mini", u) * 10**12) for u in usages)
    assert from_billing == booked  # what the provider billed is what the ledger holds


def test_budget_status_names_bad_scopes_and_unknown_keys(gateway_url):
    assert httpx.get(f"{gateway_url}/v1/gateway/budgets/planet/x", headers=AUTH).json()["error"]["param"] == "scope"
    assert httpx.get(f"{gateway_url}/v1/gateway/budgets/user/nobody", headers=AUTH).status_code == 404


def _spent_picos(gateway_url: str, user: str) -> Decimal:
    status = httpx.get(f"{gateway_url}/v1/gateway/budgets/user/{user}", timeout=10, headers=AUTH).json()["budgets"][0]
    return Decimal(status["spent_usd"]) * 10**12


def test_the_ledger_dies_under_load_and_no_settled_spend_is_lost(gateway_url):
    import ray

    user = "ledger-user"
    answers = []
    for i in range(24):
        if i == 8:  # mid-way: the ledger is killed; Ray restarts it, and it reloads settled spend from SQLite
            ray.kill(ray.get_actor("budget_ledger", namespace="llm_gateway"), no_restart=False)
        body = {"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": f"ledger {i}"}]}
        answers.append(httpx.post(f"{gateway_url}/v1/chat/completions", json=body,
                                  headers={**AUTH, "x-gateway-user": user}, timeout=30))  # fmt: skip
    assert all(a.status_code == 200 for a in answers)  # serving continued on the replicas' leases
    booked = sum(math.ceil(Decimal(a.headers["x-gateway-cost-usd"]) * 10**12) for a in answers)
    stop = time.monotonic() + 15
    while _spent_picos(gateway_url, user) != booked and time.monotonic() < stop:
        time.sleep(0.2)  # charges queued while the ledger was down are re-sent until acknowledged
    assert _spent_picos(gateway_url, user) == booked


# --- accounting across the ways a call ends: what the ledger holds equals what the emulator billed ---------------


def _billed(emulator, marker: str) -> list:
    ids = {r.request_id for r in emulator.recorder.requests if marker in str(r.body)}
    return [b for b in emulator.recorder.billing if b.request_id in ids]


def _wait_billed(emulator, marker: str) -> list:
    """Billing records of a stream the gateway left: the emulator writes them once it sees the connection close."""
    stop = time.monotonic() + 10
    while not _billed(emulator, marker) and time.monotonic() < stop:
        time.sleep(0.05)
    return _billed(emulator, marker)


def _priced(records, kind: str, model: str) -> int:
    pricer = Pricer()
    usages = [Usage(input_tokens=b.input_tokens, output_tokens=b.output_tokens) for b in records]
    return sum(math.ceil(pricer.cost(kind, model, u) * 10**12) for u in usages)


def _status(gateway_url: str, scope: str, key: str) -> dict:
    return httpx.get(f"{gateway_url}/v1/gateway/budgets/{scope}/{key}", timeout=10, headers=AUTH).json()["budgets"][0]


def _settles_to(gateway_url: str, scope: str, key: str, picos: int | None = None, tokens: int | None = None) -> dict:
    """The ledger's status once it holds `picos` / `tokens` (replicas settle in batches), or the last one seen."""
    stop = time.monotonic() + 15
    while True:
        status = _status(gateway_url, scope, key)
        ok_m = picos is None or Decimal(status["spent_usd"]) * 10**12 == picos
        ok_t = tokens is None or status["spent_tokens"] == tokens
        if (ok_m and ok_t) or time.monotonic() > stop:
            return status
        time.sleep(0.1)


def _native(gateway_url: str, body: dict, headers: dict | None = None, stop_after: int | None = None) -> list:
    """The native stream's typed events; `stop_after` text deltas: the client leaves there."""
    events, deltas = [], 0
    with httpx.stream(
        "POST", f"{gateway_url}/v1/gateway/chat", json=body, headers={**AUTH, **(headers or {})}, timeout=30
    ) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(STREAM_EVENT_ADAPTER.validate_json(line[6:]))
                deltas += events[-1].type == "text_delta"
                if stop_after is not None and deltas == stop_after:
                    break
    return events


ACCOUNTING = {"x-gateway-user": "accounting-user"}


def _accounting_spent(gateway_url: str) -> Decimal:
    return Decimal(_status(gateway_url, "user", "accounting-user")["spent_usd"]) * 10**12


def _books(gateway_url: str, expected: Decimal) -> None:
    """The ledger comes to hold exactly `expected` pico-dollars for the accounting user."""
    status = _settles_to(gateway_url, "user", "accounting-user", expected)
    assert Decimal(status["spent_usd"]) * 10**12 == expected


def test_streamed_and_non_streamed_calls_with_the_same_output_are_charged_the_same(gateway_url, emulator):
    before = _accounting_spent(gateway_url)
    body = {"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "same cost probe"}]}
    whole = httpx.post(f"{gateway_url}/v1/chat/completions", json=body, headers={**AUTH, **ACCOUNTING}, timeout=30)
    finish = _native(gateway_url, body, ACCOUNTING)[-1]
    assert whole.status_code == 200 and finish.type == "finish"
    assert Decimal(whole.headers["x-gateway-cost-usd"]) == finish.cost_usd > 0
    assert whole.json()["usage"]["completion_tokens"] == finish.usage.output_tokens
    billed = _billed(emulator, "same cost probe")
    assert len(billed) == 2 and {b.stream for b in billed} == {False, True}
    _books(gateway_url, before + _priced(billed, "openai", "gpt-4o-mini"))


def test_a_fallback_books_only_the_answering_model(gateway_url, emulator):
    before = _accounting_spent(gateway_url)
    body = {"model": "bounded-503", "fallbacks": ["claude-haiku-4-5"], "max_tokens": 20,
            "messages": [{"role": "user", "content": "fallback accounting probe"}]}  # fmt: skip
    answer = httpx.post(f"{gateway_url}/v1/chat/completions", json=body, headers={**AUTH, **ACCOUNTING}, timeout=30)
    assert answer.status_code == 200 and answer.json()["model"] == "claude-haiku-4-5"
    billed = _billed(emulator, "fallback accounting probe")
    assert [b.model for b in billed] == ["claude-haiku-4-5"]  # the 503s were never billed
    cost = _priced(billed, "anthropic", "claude-haiku-4-5")
    assert math.ceil(Decimal(answer.headers["x-gateway-cost-usd"]) * 10**12) == cost
    _books(gateway_url, before + cost)


def test_a_client_that_leaves_mid_stream_is_charged_what_was_relayed_never_less_than_billed(gateway_url, emulator):
    """Nobody reports the output of a stream the client left: it is counted from the relayed text with the
    tokenizer (a delta carries several tokens on most providers), and never comes to less than the provider billed."""
    before = _accounting_spent(gateway_url)
    body = {"model": "claude-stall", "max_tokens": 20, "messages": [{"role": "user", "content": "leaving probe"}]}
    events = _native(gateway_url, body, ACCOUNTING, stop_after=3)  # three deltas, then the provider stalls
    deltas = [e.text for e in events if e.type == "text_delta"]
    assert [e.type for e in events][-3:] == ["text_delta"] * 3
    [billed] = _wait_billed(emulator, "leaving probe")
    assert billed.outcome == "stall" and billed.output_tokens == len("".join(deltas).split())  # its tokens: words
    counted = sum(TokenEstimator().count_text(d) for d in deltas)
    relayed = Usage(input_tokens=billed.input_tokens, output_tokens=counted)  # the prompt, counted at message start
    cost = math.ceil(Pricer().cost("anthropic", "claude-haiku-4-5", relayed) * 10**12)
    _books(gateway_url, before + cost)
    assert cost >= _priced([billed], "anthropic", "claude-haiku-4-5")


def test_a_stream_is_cut_where_its_turn_budget_ends_and_charged_what_was_billed(gateway_url, emulator):
    body = {"model": "paced-mini", "messages": [{"role": "user", "content": "cut probe, a long answer please"}],
            "metadata": {"turn_id": "cut-turn-1"}}  # fmt: skip
    events = _native(gateway_url, body)
    finish = events[-1]
    assert finish.type == "finish" and finish.finish_reason == "budget_exceeded"
    relayed = sum(TokenEstimator().count_text(e.text) for e in events if e.type == "text_delta")
    # the turn has 30 tokens: the prompt estimate and what was relayed fit; the delta read past them was not sent
    # on, but it was billed, so it is counted
    assert finish.usage.input_tokens + relayed <= 30 < finish.usage.total_tokens
    assert finish.usage.output_tokens > relayed
    [billed] = _wait_billed(emulator, "cut probe")
    assert billed.outcome == "disconnected" and billed.output_tokens <= finish.usage.output_tokens < 40
    status = _settles_to(gateway_url, "turn", "cut-turn-1", tokens=finish.usage.total_tokens)
    assert status["spent_tokens"] == finish.usage.total_tokens  # the limit, plus the delta in flight at the cut


def test_a_long_conversation_is_shrunk_to_fit_its_budget(gateway_url, emulator):
    filler = "background detail " * 300
    messages = [{"role": "system", "content": "You are the executor. shrink probe"}]
    for i in range(4):
        messages += [{"role": "user", "content": f"old question {i} {filler}"},
                     {"role": "assistant", "content": f"old answer {i} {filler}"}]  # fmt: skip
    messages.append({"role": "user", "content": "the last question, shrink probe"})
    body = {"model": "gpt-4o-mini", "max_tokens": 50, "messages": messages}
    answer = httpx.post(f"{gateway_url}/v1/chat/completions", json=body,
                        headers={**AUTH, "x-gateway-user": "shrink-user"}, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    decision = answer.headers["x-gateway-budget"]
    assert decision.startswith("shrink;") and "budget=shrink-user-day" in decision and "dropped" in decision
    [sent] = [r.body for r in emulator.recorder.requests if "the last question, shrink probe" in str(r.body)]
    assert sent["messages"][0]["content"] == "You are the executor. shrink probe"
    assert sent["messages"][-1]["content"] == "the last question, shrink probe"
    assert 2 <= len(sent["messages"]) < len(messages) and sent["messages"][1]["role"] == "user"
    [billed] = _billed(emulator, "the last question, shrink probe")
    status = _settles_to(gateway_url, "user", "shrink-user", tokens=billed.input_tokens + billed.output_tokens)
    assert status["spent_tokens"] == billed.input_tokens + billed.output_tokens <= 1500


def test_a_call_over_budget_is_downgraded_to_a_cheaper_model(gateway_url, emulator):
    body = {"model": "claude-haiku-4-5", "max_tokens": 200,
            "messages": [{"role": "user", "content": "downgrade probe"}]}  # fmt: skip
    answer = httpx.post(f"{gateway_url}/v1/chat/completions", json=body,
                        headers={**AUTH, "x-gateway-user": "downgrade-user"}, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "gpt-4o-mini"
    decision = answer.headers["x-gateway-budget"]
    assert decision.startswith("downgrade;") and "claude-haiku-4-5 -> gpt-4o-mini" in decision
    assert [b.model for b in _billed(emulator, "downgrade probe")] == ["gpt-4o-mini"]


def test_embeddings_are_reserved_and_booked_at_the_billed_usage(gateway_url, emulator):
    before = _accounting_spent(gateway_url)
    body = {"model": "text-embedding-3-small", "input": ["embedding probe one", "embedding probe two, longer"]}
    answer = httpx.post(f"{gateway_url}/v1/embeddings", json=body, headers={**AUTH, **ACCOUNTING}, timeout=30)
    assert answer.status_code == 200, answer.text
    billed = _billed(emulator, "embedding probe one")
    assert len(billed) == 1 and billed[0].input_tokens == answer.json()["usage"]["prompt_tokens"]
    cost = _priced(billed, "openai", "text-embedding-3-small")
    assert math.ceil(Decimal(answer.headers["x-gateway-cost-usd"]) * 10**12) == cost
    _books(gateway_url, before + cost)


def test_an_attempt_abandoned_for_a_slow_first_token_is_charged_its_prompt(gateway_url, emulator):
    before = _accounting_spent(gateway_url)
    messages = [{"role": "user", "content": "abandoned attempt probe"}]
    body = {"model": "impatient-slow", "fallbacks": ["gpt-4o-mini"], "max_tokens": 20, "messages": messages}
    finish = _native(gateway_url, body, ACCOUNTING)[-1]
    assert finish.type == "finish" and finish.attempts == 2
    records = _billed(emulator, "abandoned attempt probe")
    stop = time.monotonic() + 10
    while len(records) < 2 and time.monotonic() < stop:  # the slow one bills when it sees the gateway leave
        time.sleep(0.05)
        records = _billed(emulator, "abandoned attempt probe")
    slow = [b for b in records if b.outcome == "disconnected"]  # (billed under the base model's name)
    answered = [b for b in records if b.outcome == "ok"]
    assert len(slow) == 1 and slow[0].output_tokens == 0 and slow[0].input_tokens > 0  # the provider billed it
    request = ChatRequest(model="impatient-slow", messages=messages, max_tokens=20)
    prompt = TokenEstimator().prompt_tokens(request, ModelEntry(provider="openai", upstream="gpt-4o-mini"), "openai")
    abandoned = math.ceil(Pricer().cost("openai", "gpt-4o-mini", Usage(input_tokens=prompt)) * 10**12)
    expected = before + _priced(answered, "openai", "gpt-4o-mini") + abandoned  # its prompt, as estimated
    _books(gateway_url, expected)
