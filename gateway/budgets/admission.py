"""Budget admission: reserve a call's worst case — or, as the refusing budget's `on_exceed` says, shrink the request
or downgrade it to cheaper candidates until it fits, or refuse it. Every decision is logged with its numbers."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.budgets.gate import BudgetRefused
from gateway.budgets.policy import usd_text
from gateway.budgets.shrink import shrink
from gateway.budgets.spending import Estimate, Hold, Spending
from gateway.config import ModelEntry
from gateway.schema import ChatRequest, EmbeddingsRequest, GatewayError

log = logging.getLogger("gateway.budgets")


def _usd(picos: int | None) -> str | None:
    return None if picos is None else usd_text(picos)


@dataclass(frozen=True, slots=True)
class Decision:
    """What admission did with a call, and why (logged as one event; summed up in `x-gateway-budget`)."""

    action: str  # allow | shrink | downgrade | refuse
    estimate: Estimate
    budget: str | None = None  # the budget that forced a shrink, a downgrade or the refusal
    available: tuple[int | None, int | None] | None = None
    detail: str = ""

    def event(self, request: ChatRequest | EmbeddingsRequest) -> dict[str, object]:
        meta = request.metadata
        return {
            "event": "budget_decision", "action": self.action, "budget": self.budget,
            "estimate_usd": _usd(self.estimate.picos), "estimate_tokens": self.estimate.tokens,
            "available_usd": _usd(self.available[0]) if self.available else None,
            "available_tokens": self.available[1] if self.available else None,
            "detail": self.detail, "model": request.model, "daemon": meta.daemon, "org": meta.org,
            "user": meta.user, "turn_id": meta.turn_id,
        }  # fmt: skip

    @property
    def header(self) -> str:
        parts = [self.action, f"estimate=${_usd(self.estimate.picos)}/{self.estimate.tokens}t"]
        if self.budget is not None:
            parts.append(f"budget={self.budget}")
        if self.available is not None:
            parts.append(f"available=${_usd(self.available[0]) or '-'}/{self.available[1] or '-'}t")
        if self.detail:
            parts.append(self.detail)
        return "; ".join(parts)


@dataclass
class Admitted:
    hold: Hold | None
    request: ChatRequest  # as shrunk
    entries: dict[str, ModelEntry]  # the candidates, in order (fewer or others after a downgrade)
    decision: Decision | None = None
    actions: list[str] = field(default_factory=list)


class Admission:
    def __init__(self, spending: Spending, servable: Callable[[ChatRequest, tuple[str, ...]], dict[str, ModelEntry]]):
        """`servable(request, names)`: the catalog entries of those models that can serve the request (priced,
        capable), in order — a downgrade's way out of the route."""
        self._spending = spending
        self._servable = servable

    def _record(self, decision: Decision, request: ChatRequest | EmbeddingsRequest) -> Decision:
        if log.isEnabledFor(logging.INFO):
            log.info(json.dumps(decision.event(request), separators=(",", ":")))
        return decision

    async def admit(self, request: ChatRequest, entries: dict[str, ModelEntry]) -> Admitted:
        spending = self._spending
        accounts = spending.accounts(request.metadata)
        if not accounts:
            return Admitted(None, request, entries)
        tried: set[tuple[str, str]] = set()
        done: list[tuple[str, str, BudgetRefused]] = []  # (action, detail, the refusal that caused it)
        while True:
            estimate = spending.estimate(request, entries)
            try:
                hold = await spending.hold(accounts, estimate)
            except BudgetRefused as refused:
                budget = spending.rule(refused.account)
                step = (refused.account.id, budget.on_exceed)
                outcome = None if budget.on_exceed == "refuse" or step in tried else (
                    self._shrink(request, entries, refused, budget.min_output_tokens) if budget.on_exceed == "shrink"
                    else self._downgrade(request, entries, refused, budget.downgrade_to))  # fmt: skip
                if outcome is None:
                    why = f"on_exceed={budget.on_exceed}" + ("" if step not in tried else ", still short after it")
                    self._record(Decision("refuse", estimate, refused.account.budget, refused.available, why), request)
                    raise
                tried.add(step)
                request, entries, detail = outcome
                done.append((budget.on_exceed, detail, refused))
                continue
            except GatewayError as exc:  # the ledger cannot be asked and this replica's balance is spent
                self._record(Decision("refuse", estimate, detail=exc.message), request)
                raise
            if not done:
                decision = Decision("allow", estimate)
            else:
                action, _, last = done[-1]
                detail = "; ".join(f"{a}: {d}" for a, d, _ in done)
                decision = Decision(action, estimate, last.account.budget, last.available, detail)
            return Admitted(hold, request, entries, self._record(decision, request))

    async def admit_embeddings(self, request: EmbeddingsRequest, entries: dict[str, ModelEntry]) -> Hold | None:
        """Embeddings are reserved and settled like chat calls; over budget they are refused (nothing to shrink)."""
        accounts = self._spending.accounts(request.metadata)
        if not accounts:
            return None
        estimate = self._spending.estimate_embeddings(request, entries)
        try:
            hold = await self._spending.hold(accounts, estimate)
        except BudgetRefused as refused:
            self._record(Decision("refuse", estimate, refused.account.budget, refused.available, "embeddings"),
                         request)  # fmt: skip
            raise
        except GatewayError as exc:
            self._record(Decision("refuse", estimate, detail=exc.message), request)
            raise
        self._record(Decision("allow", estimate), request)
        return hold

    def _shrink(
        self, request: ChatRequest, entries: dict[str, ModelEntry], refused: BudgetRefused, floor: int
    ) -> tuple[ChatRequest, dict[str, ModelEntry], str] | None:
        spending = self._spending
        allowance = max(spending.allowance(request, e) for e in entries.values())
        shrunk = shrink(request, lambda r: spending.estimate(r, entries).fits(refused.available), allowance, floor)
        return None if shrunk is None else (shrunk.request, entries, shrunk.summary())

    def _downgrade(
        self, request: ChatRequest, entries: dict[str, ModelEntry], refused: BudgetRefused, to: tuple[str, ...]
    ) -> tuple[ChatRequest, dict[str, ModelEntry], str] | None:
        """The route's candidates whose own worst case fits, in order; else the budget's `downgrade_to` ones."""
        for pool in (entries, self._servable(request, to)):
            fits = {n: e for n, e in pool.items() if self._spending.estimate(request, {n: e}).fits(refused.available)}
            if fits:
                return request, fits, f"{'>'.join(entries)} -> {'>'.join(fits)}"
        return None
