"""The guards: a policy's guard specs compiled (blocklist, PII, an external HTTP checker), each answering one
verdict for the texts of a stage; `Finding` is what the stream guard reads of the built-in ones."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from gateway.safety.blocklist import Blocklist
from gateway.safety.pii import LONGEST, Span, find
from gateway.safety.policy import GuardSpec, Stage
from gateway.safety.redact import Redactor

log = logging.getLogger("gateway.safety")
Outcome = Literal["allow", "redact", "block", "flag", "error"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One guard's answer at one stage (`count`: findings redacted or flagged). Never holds the matched text."""

    guard: str
    stage: Stage
    outcome: Outcome
    category: str | None = None
    reason: str | None = None
    count: int = 0
    ms: float = 0.0


class GuardFailed(Exception):
    """The guard could not give a verdict (timeout, unreachable, an answer it could not read)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """What a built-in guard finds in one text: a reason to block, spans to redact, and flagged findings."""

    block: tuple[str, str] | None = None  # (category, reason)
    redact: tuple[Span, ...] = ()
    flagged: int = 0
    flag_category: str | None = None


@dataclass
class Guard:
    name: str
    spec: GuardSpec
    window: int = 0  # characters a stream must hold back for this guard to see an entry whole
    _blocklist: Blocklist | None = field(default=None, repr=False)
    _client: httpx.AsyncClient | None = field(default=None, repr=False)

    @classmethod
    def build(cls, name: str, spec: GuardSpec) -> Guard:
        if spec.kind == "blocklist":
            bl = Blocklist(spec.terms, spec.phrases, spec.regexes)
            return cls(name, spec, max(bl.longest, LONGEST if spec.regexes else 0), _blocklist=bl)
        if spec.kind == "pii":
            return cls(name, spec, LONGEST)
        return cls(name, spec, 0, _client=httpx.AsyncClient(timeout=spec.timeout_ms / 1000))

    @property
    def builtin(self) -> bool:
        return self.spec.kind != "http"

    def finding(self, text: str) -> Finding:
        """A built-in guard's look at one text (pure CPU, bounded: no timeout needed)."""
        if self._blocklist is not None:
            entry = self._blocklist.find(text)
            if entry is None:
                return Finding()
            if self.spec.action == "flag":
                return Finding(flagged=1, flag_category="blocklist")
            return Finding(block=("blocklist", f"matched {entry}"))
        actions = self.spec.actions
        spans = find(text, frozenset(actions), self.spec.region)
        blocked = next((s for s in spans if actions[s.entity] == "block"), None)
        if blocked is not None:
            return Finding(block=(f"pii:{blocked.entity}", f"the text holds a {blocked.entity.replace('_', ' ')}"))
        flagged = [s for s in spans if actions[s.entity] == "flag"]
        return Finding(redact=tuple(s for s in spans if actions[s.entity] == "redact"), flagged=len(flagged),
                       flag_category=f"pii:{flagged[0].entity}" if flagged else None)  # fmt: skip

    async def check(self, texts: Sequence[str], stage: Stage, redactor: Redactor) -> tuple[list[str], Verdict]:
        """The texts after this guard (redacted where it says so) and its verdict; GuardFailed if it cannot say."""
        if not self.builtin:
            return await self._ask(texts, stage)
        out, redacted, flagged, flag_category = [], 0, 0, None
        for text in texts:
            f = self.finding(text)
            if f.block is not None:
                return list(texts), Verdict(self.name, stage, "block", *f.block)
            out.append(redactor.apply(text, f.redact))
            redacted, flagged = redacted + len(f.redact), flagged + f.flagged
            flag_category = flag_category or f.flag_category
        if redacted:
            return out, Verdict(self.name, stage, "redact", "pii", count=redacted)
        if flagged:
            return out, Verdict(self.name, stage, "flag", flag_category, count=flagged)
        return out, Verdict(self.name, stage, "allow")

    async def _ask(self, texts: Sequence[str], stage: Stage) -> tuple[list[str], Verdict]:
        assert self._client is not None and self.spec.url is not None
        try:
            r = await self._client.post(self.spec.url, json={"guard": self.name, "stage": stage, "texts": list(texts)})
            r.raise_for_status()
            answer = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise GuardFailed(f"{type(exc).__name__}") from None
        return _read_answer(self.name, stage, texts, answer)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _read_answer(name: str, stage: Stage, texts: Sequence[str], answer: Any) -> tuple[list[str], Verdict]:
    """An external checker's answer: {"verdict": allow|block|flag|redact, "category", "reason", "texts"}."""
    if not isinstance(answer, dict) or answer.get("verdict") not in ("allow", "block", "flag", "redact"):
        raise GuardFailed("an answer without a verdict")
    verdict, category, reason = answer["verdict"], answer.get("category"), answer.get("reason")
    if verdict != "redact":
        return list(texts), Verdict(name, stage, verdict, category, reason, count=int(verdict == "flag"))
    new = answer.get("texts")
    if not isinstance(new, list) or len(new) != len(texts) or not all(isinstance(t, str) for t in new):
        raise GuardFailed("a redaction without one text per text sent")
    changed = sum(a != b for a, b in zip(new, texts, strict=True))
    return new, Verdict(name, stage, "redact", category, reason, count=changed)
