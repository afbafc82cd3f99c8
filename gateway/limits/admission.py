"""Rate-limit admission of one call: the buckets its caller draws from, its estimate (the prompt the budgets
already counted, else a quick estimate, plus the output allowance), and the ticket the call reconciles at its end."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gateway.config import ModelEntry
from gateway.limits.gate import LimitGate, Ticket
from gateway.limits.policy import CallerBuckets, LimitsPolicy
from gateway.routing.planner import estimate_prompt_tokens
from gateway.schema import ChatRequest, EmbeddingsRequest, GatewayMetadata
from gateway.tokens import TokenEstimator

TOKEN_QUANTITIES = frozenset({"tokens", "input", "output"})


class RateAdmission:
    def __init__(self, policy: LimitsPolicy, gate: LimitGate, tokens: TokenEstimator,
                 kind_of: Callable[[str], str], default_output: int) -> None:  # fmt: skip
        self.gate, self.policy = gate, policy
        self._buckets = CallerBuckets(policy)
        self._tokens, self._kind_of, self._default_output = tokens, kind_of, default_output

    def adopt(self, policy: LimitsPolicy) -> None:
        """Rules changed at run time: calls from now on draw from the new policy's buckets."""
        self.policy, self._buckets = policy, CallerBuckets(policy)

    def applies(self, meta: GatewayMetadata) -> bool:
        """Whether any limit applies to this caller (a cached lookup; the pipeline skips the rest when none)."""
        return bool(self._buckets(meta))

    async def admit(self, request: ChatRequest, entries: Mapping[str, ModelEntry],
                    prompt: Mapping[str, int] | None = None) -> Ticket | None:  # fmt: skip
        """Take the call from its buckets (429 when one cannot admit it); None when no limit applies.
        `prompt`: the budgets' estimate per candidate, when they made one."""
        refs = self._buckets(request.metadata)
        if not refs:
            return None
        inp = out = 0
        if any(r.quantity in TOKEN_QUANTITIES for r in refs) and entries:
            out = max(request.max_tokens or e.max_output_tokens or self._default_output for e in entries.values())
            inp = max(prompt.values()) if prompt else self._prompt(request, entries)
        return await self.gate.admit(refs, inp, out)

    async def admit_embeddings(self, request: EmbeddingsRequest, entries: Mapping[str, ModelEntry],
                               prompt: Mapping[str, int] | None = None) -> Ticket | None:  # fmt: skip
        refs = self._buckets(request.metadata)
        if not refs:
            return None
        inp = 0
        if any(r.quantity in TOKEN_QUANTITIES for r in refs) and entries:
            if prompt:
                inp = max(prompt.values())
            else:
                entry = next(iter(entries.values()))
                inp = self._tokens.input_tokens(request.texts, entry, self._kind_of(entry.provider))
        return await self.gate.admit(refs, inp, 0)

    @staticmethod
    def _prompt(request: ChatRequest, entries: Mapping[str, ModelEntry]) -> int:
        """Without the budgets' BPE count, the quick character estimate (the one provider rate leases take): the
        call is reconciled with the provider's count when it ends, so an estimate only moves when that happens."""
        return estimate_prompt_tokens(request)
