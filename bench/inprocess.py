"""In-process cost of the request path: the Pipeline over an adapter that answers at once (no network, no Ray),
with budgets off and on, rate limits on (four buckets of the caller's org, leased from an in-process owner), safety
guards off / as shipped / on (a blocklist and the PII detectors at every stage, on a 2 000-character prompt), and
the caller's authentication (a cached gateway key, the audit line written to a file,
the identity bound to the request). What a request costs the replica's CPU, apart from HTTP and the provider.

    .venv/bin/python -m bench.inprocess [--calls 20000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import pstats
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from gateway.auth.admin import KeyAdmin, LocalRegistry
from gateway.auth.audit import Audit
from gateway.auth.authenticator import Authenticator
from gateway.auth.cache import KeyCache
from gateway.auth.identity import bind
from gateway.auth.keys import KeyHasher
from gateway.auth.registry import KeyRegistry
from gateway.auth.store import SqliteKeyStore
from gateway.budgets.gate import BudgetGate
from gateway.budgets.ledger import Ledger
from gateway.budgets.policy import Budget, BudgetPolicy
from gateway.budgets.spending import Spending
from gateway.budgets.store import SqliteSpendStore
from gateway.config import ModelEntry, Timeouts
from gateway.limits.admission import RateAdmission
from gateway.limits.gate import LimitGate
from gateway.limits.owner import BucketOwner
from gateway.limits.policy import LimitRule, LimitsPolicy
from gateway.limits.store import MemoryBucketStore
from gateway.pipeline import Pipeline
from gateway.policy_files import PROJECT_ROOT
from gateway.pricing import Pricer
from gateway.providers.base import Target
from gateway.safety.policy import SafetyPolicy, load_safety
from gateway.safety.screen import Safety
from gateway.schema import ChatRequest, ChatResponse, FinishEvent, StartEvent, TextDelta, Usage
from gateway.tokens import TokenEstimator

CATALOG = {"gpt-4o-mini": ModelEntry(provider="fake", upstream="gpt-4o-mini"),
           "gpt-4o": ModelEntry(provider="fake", upstream="gpt-4o")}  # fmt: skip
# the four accounts of bench/budgets.bench.yaml
POLICY = BudgetPolicy(budgets={
    "global-day": Budget(scope="global", window="day", limit_usd=Decimal(1_000_000)),
    "executor-day": Budget(scope="daemon", key="executor", window="day", limit_usd=Decimal(100_000)),
    "org-month": Budget(scope="org", window="month", limit_usd=Decimal(1_000_000), limit_tokens=10**11),
    "user-day": Budget(scope="user", window="day", limit_usd=Decimal(100_000)),
})  # fmt: skip
# bench/limits.bench.yaml's four buckets, on the org (the in-process caller has no key)
LIMITS = LimitsPolicy(limits={"per-org": LimitRule(scope="org", rpm=10**8, tpm=10**11, output_tpm=10**11,
                                                   concurrent=10**5)})  # fmt: skip
META = {"daemon": "executor", "org": "bench-org", "user": "bench-user"}


class Instant:
    """An adapter that answers at once: 20 chunks for a stream."""

    async def complete(self, request, target) -> ChatResponse:
        return ChatResponse(id="x", text="hi", finish_reason="stop", usage=Usage(input_tokens=9, output_tokens=20),
                            provider="fake", model=target.name, upstream_model=target.entry.upstream)  # fmt: skip

    async def stream(self, request, target):
        yield StartEvent(id="s", provider="fake", model=target.name, upstream_model=target.entry.upstream)
        for i in range(20):
            yield TextDelta(text=f" w{i}")
        yield FinishEvent(finish_reason="stop", usage=Usage(input_tokens=9, output_tokens=20))


class Registry:
    catalog = CATALOG

    def __init__(self) -> None:
        self._provider = Instant()

    def targets(self, model: str, kind: str = "chat") -> list[Target]:
        return [self.target(model, kind)]

    def unsupported(self, request, target) -> None:
        return None

    def target(self, model: str, kind: str = "chat") -> Target:
        return Target(model, "fake", CATALOG[model])

    def kind(self, name: str) -> str:
        return "openai"

    def provider(self, name: str) -> Instant:
        return self._provider

    def timeouts(self, name: str) -> Timeouts:
        return Timeouts()

    async def aclose(self) -> None:
        pass


# every guard at every stage for every caller: a blocklist and the PII detectors (bench only)
GUARDS = SafetyPolicy.model_validate({
    "guards": {"words": {"kind": "blocklist", "phrases": ["project nightingale", "do not say this"],
                         "terms": ["darn"]}, "pii": {"kind": "pii"}},
    "profiles": {"all": {"input": ["words", "pii"], "output": ["words", "pii"], "stream": ["words", "pii"]}},
    "select": [{"profile": "all"}],
})  # fmt: skip
# a 2 000-character prompt: prose with a few numbers, the kind of text the detectors must scan
PROMPT = (
    "Summarise the meeting notes: the team shipped release 3.11 on Tuesday, fixed 12 bugs and planned the "
    "next sprint around the billing service, with reviews due by the end of the week. "
) * 11


def pipeline(budgets: bool, store: Path, limits: bool = False, safety: SafetyPolicy | None = None) -> Pipeline:
    registry, pricer = Registry(), Pricer()
    spending = None
    if budgets:
        ledger, gate = Ledger(SqliteSpendStore(store)), BudgetGate()

        async def granter(account, want, need):
            return ledger.grant("r", account, want, need)

        gate.granter = granter
        spending = Spending(POLICY, gate, pricer, TokenEstimator(), registry.kind)
    rate = None
    if limits:
        owner, limit_gate = BucketOwner(MemoryBucketStore()), LimitGate()

        async def take(ref, want, need):
            return owner.grant("r", ref.id, ref.spec, want, need)

        limit_gate.granter = take
        rate = RateAdmission(LIMITS, limit_gate, TokenEstimator(), registry.kind, 4096)
    guards = Safety(safety) if safety is not None else None
    return Pipeline(registry, pricer, spending=spending, limits=rate, safety=guards)  # type: ignore[arg-type]


async def measure(p: Pipeline, calls: int, stream: bool, prompt: str = "hello benchmark") -> float:
    """Microseconds per call (the outbox is emptied as the background sync would)."""
    request = ChatRequest(model="gpt-4o-mini", fallbacks=("gpt-4o",), stream=stream, metadata=META,
                          messages=[{"role": "user", "content": prompt}])  # fmt: skip
    for _ in range(200):  # warm-up: leases, caches
        await (_drain(p, request) if stream else p.complete(request))
    t0 = time.perf_counter()
    for i in range(calls):
        await (_drain(p, request) if stream else p.complete(request))
        if p.spending is not None and i % 256 == 0:
            p.spending.gate.acknowledged(p.spending.gate.take_outbox(10_000))
        if p.limits is not None and i % 256 == 0:  # the background top-up, as the sync would
            for ref, want in p.limits.gate.wants():
                p.limits.gate.install(ref, await p.limits.gate.granter(ref, want, 0))
    return (time.perf_counter() - t0) / calls * 1e6


async def measure_auth(calls: int, store: Path) -> tuple[float, int]:
    """Microseconds per authenticated request (key checked from the cache, audit line written, identity bound),
    and the registry lookups that made."""
    audit_log = logging.getLogger("bench.audit")
    audit_log.setLevel(logging.INFO)
    audit_log.propagate = False
    audit_log.addHandler(logging.FileHandler(store.with_suffix(".audit.log")))
    hasher = KeyHasher(b"bench-pepper-0123456789")
    registry = LocalRegistry(KeyRegistry(SqliteKeyStore(store)))
    spec = {"name": "bench", "org": "bench-org", "daemons": ["executor"], "may_set_user": True}
    key = (await KeyAdmin(hasher, registry, CATALOG).create(spec))["key"]
    cache = KeyCache(registry.lookup)
    audit = Audit(audit_log, buffered=True)  # as in the replica: allow events written in batches
    auth = Authenticator("keys", audit, hasher, cache)
    headers = {"authorization": f"Bearer {key}", "x-gateway-user": "bench-user"}
    request = ChatRequest(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello benchmark"}],
                          metadata={"user": "bench-user"})  # fmt: skip
    for _ in range(200):
        bind(await auth.authenticate(headers, "chat.completions", "chat"), request)
    t0 = time.perf_counter()
    for i in range(calls):
        bind(await auth.authenticate(headers, "chat.completions", "chat"), request)
        if i % 256 == 0:  # the replica's flush task (every 0.5 s; a batch this size is ~1 s of a busy replica)
            audit.flush()
    audit.flush()
    return (time.perf_counter() - t0) / calls * 1e6, cache.lookups


async def _drain(p: Pipeline, request: ChatRequest) -> None:
    async for _ in p.stream(request):
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="cProfile the budgets-on stream case")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="inprocess-"))
    cases = [("budgets off", False, False), ("budgets on", True, False), ("limits on", False, True),
             ("budgets+limits", True, True)]  # fmt: skip
    for label, budgets, limits in cases + cases:
        for stream in (False, True):
            p = pipeline(budgets, tmp / f"{budgets}{limits}{stream}.db", limits)
            us = asyncio.run(measure(p, args.calls, stream))
            calls = p.limits.gate.counters["grants_on_request_path"] if p.limits is not None else 0
            print(f"{label:15} {'stream (20 chunks)' if stream else 'complete':18} {us:7.1f} us/call"
                  + (f"  ({calls} grants on the request path)" if limits else ""), flush=True)  # fmt: skip
    shipped = load_safety(PROJECT_ROOT / "policies" / "safety.yaml")
    for label, safety in [("guards off", None), ("safety.yaml", shipped), ("guards on", GUARDS)] * 2:
        for stream in (False, True):
            us = asyncio.run(measure(pipeline(False, tmp / "g.db", False, safety), args.calls, stream, PROMPT))
            print(f"{label:15} {'stream (20 chunks)' if stream else 'complete':18} {us:7.1f} us/call"
                  f"  (2 000-character prompt)", flush=True)  # fmt: skip
    for _ in range(2):
        us, lookups = asyncio.run(measure_auth(args.calls, tmp / f"keys-{_}.db"))
        print(f"authentication (keys) {us:7.1f} us/call, {lookups} registry lookup(s) for {args.calls + 200} calls",
              flush=True)  # fmt: skip
    if args.profile:
        p = pipeline(True, tmp / "profile.db")
        cProfile.runctx("asyncio.run(measure(p, args.calls, True))", globals(), locals(), str(tmp / "prof"))
        pstats.Stats(str(tmp / "prof")).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
