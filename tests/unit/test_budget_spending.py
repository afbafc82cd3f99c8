"""Budgets in the pipeline without Ray: reservations through a replica's gate and the ledger, and what each way
a call can end books (answered, cut with billed usage, the client gone, failed before billing)."""

from __future__ import annotations

import asyncio
import math
import time
from decimal import Decimal

import pytest

from gateway.budgets.gate import BudgetGate
from gateway.budgets.ledger import Ledger
from gateway.budgets.policy import Account, Budget, BudgetPolicy
from gateway.budgets.spending import Spending
from gateway.budgets.store import SqliteSpendStore
from gateway.config import ModelEntry, Timeouts
from gateway.pipeline import Pipeline
from gateway.pricing import Pricer
from gateway.providers import Target
from gateway.schema import ChatRequest, ErrorKind, FinishEvent, GatewayError, StartEvent, TextDelta, Usage
from gateway.tokens import TokenEstimator
from tests.unit.test_pipeline import FakeProvider, FakeRegistry

ACCOUNT = Account("b", "u", "d", 140, None)
POLICY = BudgetPolicy(budgets={"user-day": Budget(scope="user", key="u", window="day", limit_usd=Decimal("1"))})


def _gates(tmp_path, n: int = 2) -> tuple[Ledger, list[BudgetGate], list[int]]:
    ledger = Ledger(SqliteSpendStore(tmp_path / "s.db"))
    calls: list[int] = []
    gates = []
    for i in range(n):
        gate = BudgetGate(5 * 10**11, 200_000)

        async def granter(account, want, need, replica=f"r{i}"):
            calls.append(1)
            await asyncio.sleep(0.001)
            return ledger.grant(replica, account, want, need)

        gate.granter = granter
        gates.append(gate)
    return ledger, gates, calls


async def test_concurrent_reservations_on_two_replicas_stop_at_the_limit_with_few_ledger_calls(tmp_path):
    _, gates, calls = _gates(tmp_path)

    async def one(i: int) -> bool:
        try:
            await gates[i % 2].reserve([ACCOUNT], 14, 0)
            return True
        except GatewayError as exc:
            assert exc.kind is ErrorKind.BUDGET_EXCEEDED and "`b`" in exc.message and "estimated at" in exc.message
            return False

    admitted = sum(await asyncio.gather(*(one(i) for i in range(30))))
    assert 9 <= admitted <= 10  # 140 fits ten; a few pico-dollars may sit unused in a replica's lease
    assert len(calls) <= 10  # one grant in flight per account per replica; a refusal is reused, not re-asked


async def test_unused_reservation_returns_to_the_local_balance(tmp_path):
    _, (gate, _), calls = _gates(tmp_path)
    held = await gate.reserve([ACCOUNT], 50, 0)
    gate.settle(held, 10, 7)
    for _ in range(3):  # 70 leased - 10 spent = 60 left locally: three more of 14 without asking again
        await gate.reserve([ACCOUNT], 14, 0)
    assert len(calls) == 1 and gate.outbox[0].picos == 10 and gate.outbox[0].tokens == 7


def _pipeline(tmp_path, script) -> tuple[Pipeline, BudgetGate]:
    ledger = Ledger(SqliteSpendStore(tmp_path / "p.db"))
    gate = BudgetGate(5 * 10**11, 200_000)

    async def granter(account, want, need):
        return ledger.grant("r", account, want, need)

    gate.granter = granter
    pricer = Pricer()
    registry = FakeRegistry(FakeProvider(script))
    spending = Spending(POLICY, gate, pricer, TokenEstimator(), registry.kind)
    return Pipeline(registry, pricer, spending=spending), gate


REQ = ChatRequest(model="m", stream=True, max_tokens=50, messages=[{"role": "user", "content": "x"}],
                  metadata={"user": "u"})  # fmt: skip
START = StartEvent(id="s", provider="fake", model="m", upstream_model="gpt-4o-mini")


def _charged(gate: BudgetGate) -> tuple[int, int]:
    return sum(c.picos for c in gate.outbox), sum(c.tokens for c in gate.outbox)


async def test_a_finished_stream_books_its_reported_usage(tmp_path):
    finish = FinishEvent(finish_reason="stop", usage=Usage(input_tokens=1000, output_tokens=1000))
    pipeline, gate = _pipeline(tmp_path, [START, TextDelta(text="hi"), finish])
    [e async for e in pipeline.stream(REQ)]
    assert _charged(gate) == (750_000_000, 2000)  # gpt-4o-mini: 1000 x $0.15/M + 1000 x $0.60/M, in pico-dollars


async def test_a_stream_cut_midway_books_the_prompt_and_what_was_streamed(tmp_path):
    cut = GatewayError(ErrorKind.TRUNCATED_STREAM, "cut", usage=Usage(output_tokens=2))
    pipeline, gate = _pipeline(tmp_path, [START, TextDelta(text="a"), TextDelta(text="b"), cut])
    events = [e async for e in pipeline.stream(REQ)]
    assert events[-1].type == "error"
    picos, tokens = _charged(gate)
    assert picos > 0 and tokens > 2  # never $0 for billed output: the prompt estimate plus the two tokens


async def test_a_client_that_leaves_mid_stream_is_charged_what_was_streamed(tmp_path):
    script = [START, TextDelta(text="a"), TextDelta(text="b"), 5.0, TextDelta(text="never")]
    pipeline, gate = _pipeline(tmp_path, script)
    events = pipeline.stream(REQ)
    got = [await anext(events) for _ in range(3)]
    await events.aclose()  # the client went away
    assert [e.type for e in got] == ["start", "text_delta", "text_delta"]
    picos, tokens = _charged(gate)
    assert picos > 0 and tokens >= 2


async def test_a_call_that_failed_before_billing_books_nothing_and_frees_its_reservation(tmp_path):
    pipeline, gate = _pipeline(tmp_path, [GatewayError(ErrorKind.BAD_REQUEST, "no", fallbackable=False)])
    with pytest.raises(GatewayError):
        [e async for e in pipeline.stream(REQ)]
    assert gate.outbox == []
    assert gate._balance  # the lease is still held locally, whole again
    assert all(b[0] > 0 for b in gate._balance.values())


async def test_with_the_ledger_down_a_replica_spends_its_lease_then_fails_closed(tmp_path):
    _, (gate, _), _ = _gates(tmp_path)
    await gate.reserve([ACCOUNT], 14, 0)  # leases 70 while the ledger is up

    async def down(account, want, need):
        return None  # the ledger cannot be reached

    gate.granter = down
    for _ in range(4):  # what is already leased can still be spent: 70 - 14 = 56 = four more calls
        await gate.reserve([ACCOUNT], 14, 0)
    try:
        await gate.reserve([ACCOUNT], 14, 0)
    except GatewayError as exc:
        assert exc.kind is ErrorKind.BUDGET_EXCEEDED and "unreachable" in exc.message
    else:
        raise AssertionError("a replica without a ledger must not spend beyond its lease")


class TwoModels(FakeRegistry):
    """`slow` (gpt-4o, its first token never comes in time) and `fast` (gpt-4o-mini), each with its own script."""

    CATALOG = {"slow": ModelEntry(provider="fake", upstream="gpt-4o"),
               "fast": ModelEntry(provider="fake", upstream="gpt-4o-mini")}  # fmt: skip

    def __init__(self, scripts: dict[str, list]) -> None:
        super().__init__(FakeProvider([]))
        self.scripts = scripts

    def target(self, model: str, kind: str = "chat") -> Target:
        return Target(model, "fake", self.CATALOG[model])

    @property
    def catalog(self) -> dict:
        return self.CATALOG

    def provider(self, name: str):
        registry = self

        class ByTarget(FakeProvider):
            async def stream(self, request, target):
                self.script = registry.scripts[target.name]
                async for event in FakeProvider.stream(self, request, target):
                    yield event

        return ByTarget([])

    def timeouts(self, name: str) -> Timeouts:
        return Timeouts(total=30, first_token=0.2)


async def test_an_attempt_the_gateway_gave_up_on_is_charged_its_prompt_besides_the_answer(tmp_path):
    finish = FinishEvent(finish_reason="stop", usage=Usage(input_tokens=1000, output_tokens=1000))
    slow = [StartEvent(id="s", provider="fake", model="slow", upstream_model="gpt-4o"), 5.0, TextDelta(text="late")]
    registry = TwoModels({"slow": slow, "fast": [START, TextDelta(text="hi"), finish]})
    ledger = Ledger(SqliteSpendStore(tmp_path / "t.db"))
    gate = BudgetGate(5 * 10**11, 200_000)

    async def granter(account, want, need):
        return ledger.grant("r", account, want, need)

    gate.granter = granter
    pricer, tokens = Pricer(), TokenEstimator()
    pipeline = Pipeline(registry, pricer, spending=Spending(POLICY, gate, pricer, tokens, registry.kind))
    request = REQ.model_copy(update={"model": "slow", "fallbacks": ("fast",)})
    events = [e async for e in pipeline.stream(request)]
    assert events[-1].type == "finish" and events[-1].attempts == 2
    prompt = tokens.prompt_tokens(request, registry.CATALOG["slow"], "openai")
    abandoned = math.ceil(pricer.cost("openai", "gpt-4o", Usage(input_tokens=prompt)) * 10**12)
    assert _charged(gate) == (750_000_000 + abandoned, 2000 + prompt)  # the answer, and the prompt gpt-4o was sent


async def test_an_idle_account_goes_back_to_the_ledger_unless_a_call_still_holds_it(tmp_path):
    _, (gate, _), calls = _gates(tmp_path)
    held = await gate.reserve([ACCOUNT], 14, 0)  # leases 70
    later = time.monotonic() + 3600
    assert gate.idle(60, now=later) == []  # a call is in flight on it
    gate.settle(held, 10, 0)
    back = [(ACCOUNT.id, 60, 200_000)]  # 70 leased - 10 spent (and the token part of the lease, unlimited here)
    assert gate.idle(60, now=later) == back and gate.releases == back
    gate.released(gate.releases)
    assert gate.releases == [] and gate.idle(60, now=later) == []
    await gate.reserve([ACCOUNT], 14, 0)  # used again: a new lease
    assert len(calls) == 2


async def test_a_balance_running_low_is_refilled_in_the_background_to_twice_what_is_in_flight(tmp_path):
    ledger, (gate, _), calls = _gates(tmp_path)
    big = Account("big", "u", "d", 10_000_000, None)
    gate._chunk = (100, 200_000)  # a small lease chunk; the calls below reserve 400 each
    held = [await gate.reserve([big], 400, 0) for _ in range(3)]
    assert len(calls) == 2  # the second grant already asked for twice what was in flight (800)
    [(account, want)] = gate.wants()  # 1,200 in flight: the target is 2,400
    assert account == big and want[0] == 2_400 - gate._balance[big.id][0]
    gate.install(big, ledger.grant("r0", big, want, (0, 0)))
    assert gate.wants() == []
    more = [await gate.reserve([big], 400, 0) for _ in range(5)]  # served from the balance: no grant
    assert len(calls) == 2
    for r in held + more:
        gate.settle(r, 100, 0)
