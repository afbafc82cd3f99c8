"""What the pipeline does about budgets: estimate a call's worst case, reserve it on every account in its scope,
extend a stream's reservation when it runs past it, and settle the actual cost however the call ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from gateway.budgets.gate import BudgetGate, BudgetRefused, Reservation, to_picos
from gateway.budgets.policy import PICOS, Account, Budget, BudgetPolicy, accounts_for
from gateway.config import ModelEntry
from gateway.pricing import Pricer
from gateway.schema import ChatRequest, EmbeddingsRequest, GatewayError, Usage
from gateway.schema.chat import GatewayMetadata
from gateway.tokens import TokenEstimator

ACCOUNTS_CACHE = 4096  # callers whose accounts are kept (a turn id is a new caller)
REMOVED = Budget(scope="global", window="day", limit_tokens=0)  # frozen: what a removed budget reads as
DEFAULT_MAX_OUTPUT = 4096  # reserved when neither the request nor the catalog bounds the output (configurable)

# a caller's accounts are cached under (UTC day, daemon, org, user, turn id, key id)
CallerKey = tuple[int, str | None, str | None, str | None, str | None, str | None]


@dataclass(frozen=True, slots=True)
class Estimate:
    """The worst case of a request over a set of candidates."""

    picos: int
    tokens: int
    prompt: dict[str, int]  # model -> prompt tokens (with its provider's margin)

    def fits(self, available: tuple[int | None, int | None]) -> bool:
        return (available[0] is None or self.picos <= available[0]) and (
            available[1] is None or self.tokens <= available[1]
        )


@dataclass(slots=True)
class Hold:
    """A call's reservation and what it was estimated from (a stream's meter and settlement read it)."""

    reservation: Reservation
    prompt: dict[str, int]  # model -> prompt estimate
    cut: bool  # mid-stream: end a stream its budgets cannot extend (False: allow the overrun up to max_tokens)

    @property
    def input_tokens(self) -> int:
        """The largest prompt estimate, charged when a cut-off call reports no usage."""
        return max(self.prompt.values(), default=0)


class Spending:
    def __init__(self, policy: BudgetPolicy, gate: BudgetGate, pricer: Pricer, tokens: TokenEstimator,
                 kind_of: Callable[[str], str], default_output: int = DEFAULT_MAX_OUTPUT) -> None:  # fmt: skip
        self.policy, self.gate, self.default_output = policy, gate, default_output
        self._accounts: dict[CallerKey, list[Account]] = {}
        self._pricer, self._tokens, self._kind_of = pricer, tokens, kind_of

    def adopt(self, policy: BudgetPolicy) -> None:
        """Budgets changed at run time: calls from now on spend from the new policy's accounts."""
        self.policy, self._accounts = policy, {}

    def rule(self, account: Account) -> Budget:
        """The budget an account belongs to; one removed at run time while a call held it reads as refuse-and-cut."""
        return self.policy.budgets.get(account.budget) or REMOVED

    def accounts(self, meta: GatewayMetadata) -> list[Account]:
        """The accounts a caller spends from today (cached per caller and UTC day; bounded)."""
        day = int(time.time() // 86_400)
        principal = meta.principal
        key = (day, meta.daemon, meta.org, meta.user, meta.turn_id, principal.key_id if principal else None)
        found = self._accounts.get(key)
        if found is None:
            if len(self._accounts) >= ACCOUNTS_CACHE:
                self._accounts.clear()
            found = self._accounts[key] = accounts_for(self.policy, meta)
        return found

    def price(self, entry: ModelEntry, usage: Usage) -> Decimal:
        cost = self._pricer.cost(self._kind_of(entry.provider), entry.price_as or entry.upstream, usage)
        assert cost is not None  # unpriced candidates never get this far (Pipeline._priced)
        return cost

    def allowance(self, request: ChatRequest, entry: ModelEntry) -> int:
        """The output a call reserves: max_tokens, else the model's maximum, else the configured default."""
        return request.max_tokens or entry.max_output_tokens or self.default_output

    def estimate(self, request: ChatRequest, entries: dict[str, ModelEntry]) -> Estimate:
        """Prompt estimate (BPE, with each provider's margin) plus the whole output allowance, priced; the
        largest over the candidates."""
        picos, tokens, prompt = 0, 0, {}
        counted: dict[tuple[str, str], int] = {}  # candidates that share a tokenizer and margin share a count
        for name, entry in entries.items():
            kind = self._kind_of(entry.provider)
            key = (kind, self._tokens.encoding_name(kind, entry.upstream))  # cached by the estimator
            if key not in counted:
                counted[key] = self._tokens.prompt_tokens(request, entry, kind)
            inp = counted[key]
            out = self.allowance(request, entry)
            prompt[name] = inp
            picos = max(picos, to_picos(self.price(entry, Usage(input_tokens=inp, output_tokens=out))))
            tokens = max(tokens, inp + out)
        return Estimate(picos, tokens, prompt)

    def estimate_embeddings(self, request: EmbeddingsRequest, entries: dict[str, ModelEntry]) -> Estimate:
        """The inputs' BPE count (with each provider's margin), priced; the largest over the candidates."""
        prompt = {n: self._tokens.input_tokens(request.texts, e, self._kind_of(e.provider)) for n, e in entries.items()}
        picos = max(to_picos(self.price(e, Usage(input_tokens=prompt[n]))) for n, e in entries.items())
        return Estimate(picos, max(prompt.values()), prompt)

    async def hold(self, accounts: list[Account], estimate: Estimate) -> Hold:
        reservation = await self.gate.reserve(accounts, estimate.picos, estimate.tokens)
        cut = any(self.rule(a).mid_stream == "cut" for a in accounts)
        return Hold(reservation, estimate.prompt, cut)

    def output_limit(self, hold: Hold, entry: ModelEntry, input_tokens: int, prior_picos: int = 0) -> int:
        """How many output tokens `hold` pays for on `entry` after `input_tokens` of prompt and `prior_picos`
        already spent (a broken stream this one continues). Solved directly for a flat price; a binary search
        over the price function otherwise (tiers)."""
        res = hold.reservation
        cap = max(0, res.tokens - input_tokens) if self.gate.limits_tokens(res) else 1 << 30
        if not self.gate.limits_picos(res):
            return cap
        left = res.picos - prior_picos  # pico-dollars; a call costs ceil(input x in + output x out)
        linear = self._pricer.linear(self._kind_of(entry.provider), entry.price_as or entry.upstream)
        if linear is not None:  # dollars per million tokens -> pico-dollars per token
            per_in, per_out = (p * PICOS / 1_000_000 for p in linear)
            for_output = left - input_tokens * per_in
            if for_output < 0:
                return 0
            return cap if per_out == 0 else min(cap, int(for_output / per_out))

        def fits(out: int) -> bool:
            return to_picos(self.price(entry, Usage(input_tokens=input_tokens, output_tokens=out))) <= left

        low, high = 0, min(cap, 1 << 24)
        if not fits(0):
            return 0
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(mid) else (low, mid - 1)
        return low

    async def extend(self, hold: Hold, entry: ModelEntry) -> bool:
        """A stream reached its reservation: take one more output allowance (or whatever is left) from its
        budgets. False when they have nothing left or cannot be asked (fail closed)."""
        accounts = list(hold.reservation.accounts)
        tokens = self.default_output
        picos = to_picos(self.price(entry, Usage(output_tokens=tokens)))
        try:
            extra = await self.gate.reserve(accounts, picos, tokens)
        except BudgetRefused as exc:
            left_m, left_t = exc.available
            picos = picos if left_m is None else min(picos, left_m)
            tokens = tokens if left_t is None else min(tokens, left_t)
            if picos <= 0 or tokens <= 0:
                return False
            try:
                extra = await self.gate.reserve(accounts, picos, tokens)
            except GatewayError:
                return False
        except GatewayError:
            return False
        hold.reservation = self.gate.merge(hold.reservation, extra)
        return True

    def settle(self, hold: Hold | None, entry: ModelEntry | None, usage: Usage | None, cost: Decimal | None = None,
               extra: Sequence[tuple[Decimal, int]] = ()) -> None:  # fmt: skip
        """Book what the provider bills for the call: `cost` if known, else `usage` priced for `entry`, plus the
        `extra` (cost, tokens) of attempts billed without answering; nothing when nothing was billed."""
        if hold is None:
            return
        if cost is None and usage is not None and entry is not None and (usage.input_tokens or usage.output_tokens):
            cost = self.price(entry, usage)
        picos = (to_picos(cost) if cost is not None else 0) + sum(to_picos(c) for c, _ in extra)
        tokens = (usage.total_tokens if usage is not None else 0) + sum(t for _, t in extra)
        self.gate.settle(hold.reservation, picos, tokens)
