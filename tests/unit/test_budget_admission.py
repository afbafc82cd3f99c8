"""Budget admission and mid-stream enforcement without Ray: shrink (what it keeps and drops), downgrade, refusal
with its numbers, the decision events, and a stream metered against its reservation (extended, cut or allowed)."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest

from gateway.budgets.gate import BudgetGate, Reservation, to_picos
from gateway.budgets.ledger import Ledger
from gateway.budgets.policy import Account, Budget, BudgetPolicy
from gateway.budgets.shrink import MARKER, TOOL_KEEP_CHARS, shrink
from gateway.budgets.spending import Hold, Spending
from gateway.budgets.store import SqliteSpendStore
from gateway.config import ModelEntry
from gateway.pipeline import Pipeline
from gateway.pricing import Pricer
from gateway.providers import Target
from gateway.schema import ChatRequest, ChatResponse, ErrorKind, FinishEvent, GatewayError, StartEvent, TextDelta, Usage
from gateway.schema.chat import GatewayMetadata
from gateway.tokens import TokenEstimator
from tests.unit.test_pipeline import FakeProvider, FakeRegistry

LONG = "lorem ipsum dolor sit amet " * 400  # ~10 800 characters, ~2 000 tokens


def _conversation() -> ChatRequest:
    call = {"id": "c1", "name": "search", "arguments": "{}"}
    return ChatRequest(model="m", max_tokens=400, messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question " + LONG[:2000]},
        {"role": "assistant", "content": "first answer " + LONG[:2000]},
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": LONG},
        {"role": "assistant", "content": "found it"},
        {"role": "user", "content": "and now the last question"},
    ])  # fmt: skip


def _tokens(request: ChatRequest) -> int:
    return TokenEstimator().prompt_tokens(request, ModelEntry(provider="p", upstream="gpt-4o-mini"), "openai")


def test_shrink_truncates_tool_results_first_and_keeps_the_system_prompt_and_last_user_message():
    request = _conversation()
    before = _tokens(request)
    shrunk = shrink(request, lambda r: _tokens(r) < before - 1000, 400, 64)
    assert shrunk is not None and shrunk.truncated_tool_results == 1 and shrunk.dropped_messages == 0
    tool = shrunk.request.messages[5].content
    assert tool.startswith(LONG[:TOOL_KEEP_CHARS]) and tool.endswith(MARKER.format(len(LONG) - TOOL_KEEP_CHARS))
    assert shrunk.request.messages[0] == request.messages[0] and shrunk.request.messages[-1] == request.messages[-1]


def test_shrink_never_truncates_the_tool_result_the_last_user_turn_is_waiting_on():
    """An agent loop: the last user message, then the model's tool call and its (long) result. That result is what
    the model answers from now; shrinking drops older turns or lowers max_tokens instead."""
    call = {"id": "c2", "name": "search", "arguments": "{}"}
    request = ChatRequest(model="m", max_tokens=400, messages=[
        {"role": "user", "content": "old question " + LONG[:4000]},
        {"role": "assistant", "content": "old answer"},
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c2", "content": LONG},
    ])  # fmt: skip
    before = _tokens(request)
    shrunk = shrink(request, lambda r: _tokens(r) < before - 500, 400, 64)
    assert shrunk is not None and shrunk.truncated_tool_results == 0 and shrunk.dropped_messages == 2
    assert shrunk.request.messages[-1].content == LONG


def test_shrink_drops_whole_old_exchanges_so_no_tool_result_loses_its_call():
    request = _conversation()
    target = _tokens(request.model_copy(update={"messages": (request.messages[0], request.messages[-1])})) + 1
    shrunk = shrink(request, lambda r: _tokens(r) <= target, 400, 64)
    assert shrunk is not None
    roles = [m.role for m in shrunk.request.messages]
    assert roles == ["system", "user"] and shrunk.dropped_messages == 6
    assert shrunk.request.messages[-1].content == "and now the last question"
    # dropping only the oldest exchange is enough here: the history still starts with a user message
    one = shrink(request, lambda r: len(r.messages) <= 6 and _tokens(r) < 10**6, 400, 64)
    assert one is not None and one.dropped_messages == 2 and one.truncated_tool_results == 1
    assert [m.role for m in one.request.messages] == ["system", "user", "assistant", "tool", "assistant", "user"]


def test_shrink_lowers_max_tokens_to_the_largest_that_fits_and_gives_up_below_the_floor():
    request = ChatRequest(model="m", max_tokens=1000, messages=[{"role": "user", "content": "hi"}])
    shrunk = shrink(request, lambda r: (r.max_tokens or 1000) <= 300, 1000, 64)
    assert shrunk is not None and shrunk.request.max_tokens == 300 and shrunk.max_tokens == (1000, 300)
    assert shrink(request, lambda r: (r.max_tokens or 1000) <= 10, 1000, 64) is None


class Registry(FakeRegistry):
    """Two models on the fake provider: gpt-4o (about 17x the price) and gpt-4o-mini."""

    CATALOG = {
        "big": ModelEntry(provider="fake", upstream="gpt-4o"),
        "small": ModelEntry(provider="fake", upstream="gpt-4o-mini"),
        "capped": ModelEntry(provider="fake", upstream="gpt-4o-mini", max_output_tokens=5),
    }

    def target(self, model: str, kind: str = "chat") -> Target:
        return Target(model, "fake", self.CATALOG[model])

    @property
    def catalog(self) -> dict:
        return self.CATALOG


class Recording(FakeProvider):
    def __init__(self, script: list) -> None:
        super().__init__(script)
        self.requests: list[tuple[str, ChatRequest]] = []

    async def complete(self, request, target) -> ChatResponse:
        self.requests.append((target.name, request))
        usage = Usage(input_tokens=10, output_tokens=request.max_tokens or 10)
        return ChatResponse(id="x", text="hi", finish_reason="stop", usage=usage, provider="fake", model=target.name,
                            upstream_model=target.entry.upstream)  # fmt: skip

    async def stream(self, request, target):
        self.requests.append((target.name, request))
        async for event in super().stream(request, target):
            yield event


def _pipeline(tmp_path, budget: Budget, script: list | None = None) -> tuple[Pipeline, Recording, BudgetGate]:
    ledger = Ledger(SqliteSpendStore(tmp_path / "a.db"))
    gate = BudgetGate(5 * 10**11, 200_000)

    async def granter(account, want, need):
        return ledger.grant("r", account, want, need)

    gate.granter = granter
    provider, registry, pricer = Recording(script or []), None, Pricer()
    registry = Registry(provider)
    spending = Spending(BudgetPolicy(budgets={"turn-cap": budget}), gate, pricer, TokenEstimator(), registry.kind)
    return Pipeline(registry, pricer, spending=spending), provider, gate


def _events(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.budgets"]


TURN = {"turn_id": "t-1"}


async def test_over_budget_with_shrink_sends_a_smaller_request_and_says_what_it_removed(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gateway.budgets")
    budget = Budget(scope="turn", window="turn", limit_tokens=900, on_exceed="shrink")
    pipeline, provider, _ = _pipeline(tmp_path, budget)
    request = _conversation().model_copy(update={"model": "small", "metadata": GatewayMetadata(**TURN)})
    response = await pipeline.complete(request)
    sent = provider.requests[0][1]
    assert _tokens(sent) + sent.max_tokens <= 900 and sent.messages[0].role == "system"
    assert sent.messages[-1].content == "and now the last question"
    assert response.budget.startswith("shrink;") and "budget=turn-cap" in response.budget
    [event] = _events(caplog)
    assert event["action"] == "shrink" and event["available_tokens"] == 900 and "dropped" in event["detail"]


async def test_over_budget_with_downgrade_moves_to_the_cheaper_candidate(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gateway.budgets")
    # 100 tokens in + 1000 out: gpt-4o about $0.0103, gpt-4o-mini about $0.00062
    budget = Budget(scope="turn", window="turn", limit_usd=Decimal("0.002"), on_exceed="downgrade",
                    downgrade_to=("small",))  # fmt: skip
    pipeline, provider, _ = _pipeline(tmp_path, budget)
    request = ChatRequest(model="big", max_tokens=1000, messages=[{"role": "user", "content": "hi " * 90}],
                          metadata=TURN)  # fmt: skip
    response = await pipeline.complete(request)
    assert [name for name, _ in provider.requests] == ["small"]
    assert response.model == "small" and response.budget.startswith("downgrade;") and "big -> small" in response.budget
    assert _events(caplog)[0]["action"] == "downgrade"


async def test_refusal_names_the_budget_what_is_left_and_the_estimate_and_is_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gateway.budgets")
    budget = Budget(scope="turn", window="turn", limit_usd=Decimal("0.000010"))
    pipeline, provider, _ = _pipeline(tmp_path, budget)
    request = ChatRequest(model="small", max_tokens=1000, messages=[{"role": "user", "content": "hi"}], metadata=TURN)
    with pytest.raises(GatewayError) as err:
        await pipeline.complete(request)
    assert err.value.kind is ErrorKind.BUDGET_EXCEEDED and "`turn-cap`" in err.value.message
    assert "$0.00001 left" in err.value.message and "estimated at $0.0006" in err.value.message
    assert provider.requests == []
    [event] = _events(caplog)
    assert event["action"] == "refuse" and event["available_usd"] == "0.00001" and event["turn_id"] == "t-1"


async def test_a_shrink_that_cannot_fit_is_refused(tmp_path):
    budget = Budget(scope="turn", window="turn", limit_tokens=30, on_exceed="shrink", min_output_tokens=64)
    pipeline, provider, _ = _pipeline(tmp_path, budget)
    request = ChatRequest(model="small", max_tokens=500, messages=[{"role": "user", "content": "hi"}], metadata=TURN)
    with pytest.raises(GatewayError, match="turn-cap"):
        await pipeline.complete(request)
    assert provider.requests == []


def _stream_script(n: int) -> list:
    start = StartEvent(id="s", provider="fake", model="capped", upstream_model="gpt-4o-mini")
    finish = FinishEvent(finish_reason="stop", usage=Usage(input_tokens=9, output_tokens=n))
    return [start, *(TextDelta(text=" word") for _ in range(n)), finish]  # one token a delta (counted by BPE)


STREAM = ChatRequest(model="capped", stream=True, messages=[{"role": "user", "content": "hi"}], metadata=TURN)


async def test_a_stream_past_its_reservation_is_cut_with_budget_exceeded_when_the_budget_is_spent(tmp_path):
    # the model was expected to stop at 5 output tokens (the catalog's max); it goes on, and the turn has no more
    inp = _tokens(STREAM)
    budget = Budget(scope="turn", window="turn", limit_tokens=inp + 8, mid_stream="cut")
    pipeline, _, gate = _pipeline(tmp_path, budget, _stream_script(20))
    events = [e async for e in pipeline.stream(STREAM)]
    deltas = [e for e in events if e.type == "text_delta"]
    finish = events[-1]
    assert finish.type == "finish" and finish.finish_reason == "budget_exceeded"
    assert len(deltas) == 8  # the reservation (5) extended by what the budget had left (3)
    assert finish.usage.output_tokens == 9 and finish.usage.input_tokens == inp  # the 9th was read, so billed
    assert finish.cost_usd is not None and finish.cost_usd > 0
    assert sum(c.tokens for c in gate.outbox) == inp + 9


async def test_a_stream_past_its_reservation_runs_on_when_the_budget_allows_the_overrun(tmp_path):
    inp = _tokens(STREAM)
    budget = Budget(scope="turn", window="turn", limit_tokens=inp + 8, mid_stream="allow")
    pipeline, _, gate = _pipeline(tmp_path, budget, _stream_script(20))
    events = [e async for e in pipeline.stream(STREAM)]
    assert events[-1].type == "finish" and events[-1].finish_reason == "stop"
    assert len([e for e in events if e.type == "text_delta"]) == 20
    assert sum(c.tokens for c in gate.outbox) == 9 + 20  # the overrun is booked as the provider reported it


async def test_a_stream_past_its_reservation_extends_it_when_the_budget_has_room(tmp_path):
    budget = Budget(scope="turn", window="turn", limit_tokens=100_000)
    pipeline, _, gate = _pipeline(tmp_path, budget, _stream_script(20))
    events = [e async for e in pipeline.stream(STREAM)]
    assert events[-1].finish_reason == "stop" and len([e for e in events if e.type == "text_delta"]) == 20
    assert sum(c.tokens for c in gate.outbox) == 9 + 20


def test_the_output_a_reservation_pays_for_is_the_most_that_still_fits(tmp_path):
    spending = _pipeline(tmp_path, Budget(scope="turn", window="turn", limit_usd=Decimal(1)))[0].spending
    entry = Registry.CATALOG["small"]  # gpt-4o-mini: $0.15 in, $0.60 out per million
    for picos, prior in ((10**9, 0), (999 * 10**6, 37 * 10**6), (7 * 10**6, 0), (60 * 10**6, 59 * 10**6)):
        account = Account("turn-cap", "t", "turn", 10**9, None)
        hold = Hold(Reservation("r", (account,), picos, 0), {"small": 100}, True)
        limit = spending.output_limit(hold, entry, 100, prior)

        def cost(out: int, prior: int = prior) -> int:
            return to_picos(spending.price(entry, Usage(input_tokens=100, output_tokens=out))) + prior

        assert (limit == 0 and cost(0) > picos) or (cost(limit) <= picos < cost(limit + 1))


async def test_with_the_ledger_unreachable_and_no_balance_the_call_is_refused_and_that_is_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gateway.budgets")
    pipeline, provider, gate = _pipeline(tmp_path, Budget(scope="turn", window="turn", limit_usd=Decimal(1)))

    async def down(account, want, need):
        return None

    gate.granter = down
    request = ChatRequest(model="small", max_tokens=10, messages=[{"role": "user", "content": "hi"}], metadata=TURN)
    with pytest.raises(GatewayError, match="unreachable") as err:
        await pipeline.complete(request)
    assert err.value.kind is ErrorKind.BUDGET_EXCEEDED and provider.requests == []
    [event] = _events(caplog)
    assert event["action"] == "refuse" and "unreachable" in event["detail"] and event["estimate_usd"] is not None
