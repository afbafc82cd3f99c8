"""A replica's side of the rate limits: balances leased from the bucket owner, a ticket per call, reconciling a
call's estimate with what it used. A request makes an actor call only when a balance cannot cover it; refusals
are remembered until the bucket could admit the call, so a burst of 429s costs no actor calls either."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.limits.bucket import MILLI, BucketSpec, Level, reset_ms
from gateway.limits.owner import Grant
from gateway.limits.policy import BucketRef, Quantity
from gateway.limits.store import MemoryBucketStore
from gateway.schema import ErrorKind, GatewayError
from gateway.schema.limits import RateStatus

log = logging.getLogger("gateway.limits")
CHUNK_DIVISOR = 10  # a lease aims at a tenth of a bucket (near empty: one call's need)
IDLE_S = 2.0  # a balance unused this long goes back to its bucket (other replicas may need it)
DOWN_S = 5.0  # after the owner failed to answer, this replica serves from its fallback buckets this long
CONTENDED_ROUNDS = 20
Granter = Callable[[BucketRef, int, int], Awaitable[Grant | None]]
OnStoreError = Literal["local", "fail_closed"]
_CODES: dict[Quantity, str] = {"requests": "requests_per_minute_exceeded", "tokens": "tokens_per_minute_exceeded",
                               "input": "tokens_per_minute_exceeded", "output": "tokens_per_minute_exceeded",
                               "concurrent": "concurrency_exceeded"}  # fmt: skip
_UNITS: dict[Quantity, str] = {"requests": "requests per minute", "tokens": "tokens per minute",
                               "input": "input tokens per minute", "output": "output tokens per minute",
                               "concurrent": "calls at once"}  # fmt: skip


@dataclass(slots=True)
class Ticket:
    """What one call took from each of its buckets (milli-units), and what it was estimated at."""

    refs: tuple[BucketRef, ...]
    taken: list[int]
    buckets: list[_Bucket]  # this replica's view of each (the ticket goes back to the same one)
    input_tokens: int
    output_tokens: int  # the output allowance
    status: RateStatus | None = None
    drawn: int = 0  # output tokens drawn beyond the allowance while streaming
    done: bool = False


class RateRefused(GatewayError):
    """429 for one of a caller's limits: which one, and the headers saying where the caller stands."""

    def __init__(self, message: str, code: str, retry_after: float | None, status: RateStatus | None) -> None:
        super().__init__(ErrorKind.RATE_LIMITED, message, code=code, retry_after=retry_after, retryable=False,
                         fallbackable=False)  # fmt: skip
        self.rate = status

    def __reduce__(self) -> tuple[Any, ...]:
        return GatewayError(self.kind, self.message, **self._state()).__reduce__()


def needs(refs: tuple[BucketRef, ...], input_tokens: int, output_tokens: int) -> list[int]:
    """Each bucket's need for one call (milli-units); a token need larger than its whole bucket takes the bucket
    (the call then waits for a full minute's worth, instead of being refused forever)."""
    per: dict[Quantity, int] = {
        "requests": MILLI,
        "concurrent": MILLI,
        "input": input_tokens * MILLI,
        "output": output_tokens * MILLI,
        "tokens": (input_tokens + output_tokens) * MILLI,
    }
    return [min(per[r.quantity], r.spec.capacity) for r in refs]  # fmt: skip


@dataclass(slots=True)
class _Bucket:
    ref: BucketRef
    balance: int = 0  # what this replica holds unspent (negative: its calls used more than they were admitted for)
    inflight: int = 0  # taken by calls not yet reconciled
    seen_level: int = 0  # the owner's level at the last grant (what other replicas have not leased)
    seen_at: float = 0.0
    used_at: float = 0.0
    refused_until: float = 0.0
    refused_need: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LimitGate:
    def __init__(self, replicas: int = 1, on_store_error: OnStoreError = "local",
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._replicas = max(1, replicas)
        self._on_store_error = on_store_error
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._fallback = MemoryBucketStore()  # capacity ÷ replicas, used only while the owner cannot be reached
        self._down_until = 0.0
        self.granter: Granter | None = None
        self.counters = {"grants_on_request_path": 0, "refused": 0, "fallback_grants": 0, "owner_unreachable": 0}

    # --- admission ------------------------------------------------------------------------------------------
    async def admit(self, refs: tuple[BucketRef, ...], input_tokens: int, output_tokens: int) -> Ticket:
        """Take one call's need from every bucket, or raise 429 naming the first limit it does not fit (then
        nothing is taken from any)."""
        amounts = needs(refs, input_tokens, output_tokens)
        buckets = [self._bucket(r) for r in refs]
        for round_ in itertools.count():
            short = [(b, n) for b, n in zip(buckets, amounts, strict=True) if b.balance < n]
            if not short:
                return self._take(refs, buckets, amounts, input_tokens, output_tokens)
            if round_ >= CONTENDED_ROUNDS:
                raise GatewayError(ErrorKind.OVERLOADED, "rate-limit leases are contended (the call fits, but "
                                   "concurrent calls took each grant first); try again", retry_after=0.1)  # fmt: skip
            for bucket, need in short:
                await self._top_up(bucket, need)
        raise AssertionError("unreachable")

    def _bucket(self, ref: BucketRef) -> _Bucket:
        found = self._buckets.get(ref.id)
        if found is None or found.ref.spec != ref.spec:  # a changed limit starts a fresh local view
            found = self._buckets[ref.id] = _Bucket(ref, seen_level=ref.spec.capacity)
        return found

    def _take(self, refs: tuple[BucketRef, ...], buckets: list[_Bucket], amounts: list[int], input_tokens: int,
              output_tokens: int) -> Ticket:  # fmt: skip
        now = self._clock()
        for bucket, amount in zip(buckets, amounts, strict=True):
            bucket.balance -= amount
            bucket.inflight += amount
            bucket.used_at = now
        return Ticket(refs, amounts, buckets, input_tokens, output_tokens, self._status(buckets))

    async def _top_up(self, bucket: _Bucket, need: int) -> None:
        """One grant in flight per bucket: concurrent calls wait for it instead of asking again."""
        now = self._clock()
        if now < bucket.refused_until and need >= bucket.refused_need:
            raise self._refused(bucket, bucket.refused_until - now)
        async with bucket.lock:
            if bucket.balance >= need:
                return
            missing = need - bucket.balance
            want = max(missing, bucket.ref.spec.capacity // CHUNK_DIVISOR)
            grant = await self._ask(bucket, want, missing)
            if grant is None:
                grant = self._from_fallback(bucket, missing)
            else:
                self.counters["grants_on_request_path"] += 1
            self._install(bucket, grant)
            if not grant.granted:
                wait = grant.wait_ms / 1000 if grant.wait_ms is not None else None
                bucket.refused_until = self._clock() + (wait if wait is not None else 1.0)
                bucket.refused_need = missing
                raise self._refused(bucket, wait)

    async def _ask(self, bucket: _Bucket, want: int, need: int) -> Grant | None:
        if self.granter is None or self._clock() < self._down_until:
            return None
        grant = await self.granter(bucket.ref, want, need)
        if grant is None:
            self._down_until = self._clock() + DOWN_S
            self.counters["owner_unreachable"] += 1
            log.warning("rate limits: the bucket owner cannot be reached; %s for %.0f s", "serving from local "
                        "buckets of capacity / replicas" if self._on_store_error == "local" else "refusing calls "
                        "(on_store_error: fail_closed)", DOWN_S)  # fmt: skip
        return grant

    def _from_fallback(self, bucket: _Bucket, missing: int) -> Grant:
        """The owner is away: a local bucket of capacity ÷ replicas (refilled at rate ÷ replicas), or 503."""
        if self._on_store_error == "fail_closed":
            raise GatewayError(ErrorKind.OVERLOADED, "rate limits cannot be checked (their store is unreachable "
                               "and on_store_error is fail_closed); try again", code="rate_limit_unavailable",
                               retry_after=DOWN_S)  # fmt: skip
        spec = bucket.ref.spec
        local = BucketSpec(max(MILLI, spec.capacity // self._replicas), spec.per_minute // self._replicas)
        need = min(missing, local.capacity)
        taken = self._fallback.take(bucket.ref.id, local, need, need, 1, time.time_ns() // 1_000_000)
        self.counters["fallback_grants"] += 1
        return Grant(bucket.ref.id, taken.granted, taken.level, taken.wait_ms)

    def _install(self, bucket: _Bucket, grant: Grant) -> None:
        bucket.balance += grant.granted
        bucket.seen_level, bucket.seen_at = grant.level, self._clock()

    def _refused(self, bucket: _Bucket, wait_s: float | None) -> RateRefused:
        self.counters["refused"] += 1
        ref = bucket.ref
        amount = ref.spec.capacity // MILLI
        retry = math.ceil(wait_s) if wait_s is not None else None
        when = f"; try again in {retry} s" if retry is not None else ""
        message = f"rate limit exceeded: {ref.label} allows {amount} {_UNITS[ref.quantity]}{when}"
        return RateRefused(message, _CODES[ref.quantity], retry, self._status([bucket]))

    # --- after the call -------------------------------------------------------------------------------------
    def draw(self, ticket: Ticket, output_tokens: int) -> None:
        """A stream ran past its output allowance: the extra output is taken from its token buckets as it goes
        (never refused: limits shape traffic, budgets cut; a balance may go negative, a debt)."""
        extra = output_tokens - ticket.output_tokens - ticket.drawn
        if extra <= 0 or ticket.done:
            return
        ticket.drawn += extra
        for i, bucket in enumerate(ticket.buckets):
            if bucket.ref.quantity in ("tokens", "output"):
                bucket.balance -= extra * MILLI
                bucket.inflight += extra * MILLI
                ticket.taken[i] += extra * MILLI

    def reconcile(self, ticket: Ticket, input_tokens: int | None, output_tokens: int,
                  refund_request: bool = False) -> None:  # fmt: skip
        """The call ended: each token bucket gets back what the estimate took beyond the actual usage (or is
        charged the excess), slots are released; the request itself stays counted unless `refund_request` (the
        call was refused before it was sent)."""
        if ticket.done:
            return
        ticket.done = True
        inp = ticket.input_tokens if input_tokens is None else input_tokens
        actual: dict[Quantity, int] = {"requests": 0 if refund_request else MILLI, "concurrent": 0,
                                       "input": inp * MILLI, "output": output_tokens * MILLI,
                                       "tokens": (inp + output_tokens) * MILLI}  # fmt: skip
        now = self._clock()
        for bucket, taken in zip(ticket.buckets, ticket.taken, strict=True):
            bucket.inflight -= taken
            bucket.balance += taken - actual[bucket.ref.quantity]
            bucket.used_at = now

    # --- what the background sync does ---------------------------------------------------------------------
    def wants(self) -> list[tuple[BucketRef, int]]:
        """Buckets in use whose balance fell under half a chunk, and what would fill it (asked off the request
        path, so a call rarely waits for a grant). Not while a grant or a refusal stands, or the owner is away."""
        now, out = self._clock(), list[tuple[BucketRef, int]]()
        if now < self._down_until:
            return out
        for bucket in self._buckets.values():
            chunk = bucket.ref.spec.capacity // CHUNK_DIVISOR
            if bucket.lock.locked() or now < bucket.refused_until or now - bucket.used_at > IDLE_S:
                continue
            if bucket.balance < chunk // 2:
                out.append((bucket.ref, chunk - bucket.balance))
        return out

    def install(self, ref: BucketRef, grant: Grant) -> None:
        bucket = self._buckets.get(ref.id)
        if bucket is not None and bucket.ref.spec == ref.spec:
            self._install(bucket, grant)

    def returns(self) -> list[tuple[BucketRef, int]]:
        """What goes back to the owner now: debts at once (negative), balances unused for IDLE_S (positive);
        a bucket with nothing in flight and nothing left is forgotten. Call `returned` once the owner has them."""
        now, out = self._clock(), list[tuple[BucketRef, int]]()
        for bucket in list(self._buckets.values()):
            if bucket.lock.locked():
                continue
            if bucket.balance < 0:
                out.append((bucket.ref, bucket.balance))
            elif now - bucket.used_at > IDLE_S:
                if bucket.balance > 0:
                    out.append((bucket.ref, bucket.balance))
                elif bucket.inflight == 0 and now >= bucket.refused_until:
                    del self._buckets[bucket.ref.id]
        return out

    def returned(self, ref: BucketRef, amount: int, level: int) -> None:
        bucket = self._buckets.get(ref.id)
        if bucket is not None:
            bucket.balance -= amount
            bucket.seen_level, bucket.seen_at = level, self._clock()

    def holdings(self) -> dict[str, int]:
        """What this replica holds of each bucket: unspent plus taken by calls in flight (slots in use)."""
        return {b.ref.id: max(0, b.balance) + b.inflight for b in self._buckets.values()}

    def owner_down(self) -> bool:
        return self._clock() < self._down_until

    # --- what a client is told ------------------------------------------------------------------------------
    def _status(self, buckets: list[_Bucket]) -> RateStatus | None:
        """The tightest request limit and the tightest token limit among `buckets`: their size, what is left
        (the owner's level at the last grant plus this replica's balance) and when they are full again."""
        req: tuple[int, int, BucketSpec] | None = None  # (left, capacity, spec) of the tightest so far
        tok: tuple[int, int, BucketSpec] | None = None
        for bucket in buckets:
            quantity, spec = bucket.ref.quantity, bucket.ref.spec
            if quantity == "concurrent":
                continue
            left = min(max(0, bucket.seen_level) + max(0, bucket.balance), spec.capacity)
            best = req if quantity == "requests" else tok
            if best is None or left * best[1] < best[0] * spec.capacity:  # the smaller share left, in integers
                if quantity == "requests":
                    req = (left, spec.capacity, spec)
                else:
                    tok = (left, spec.capacity, spec)
        if req is None and tok is None:
            return None
        return RateStatus(*_limit(req), *_limit(tok))


def _limit(best: tuple[int, int, BucketSpec] | None) -> tuple[int | None, int | None, int | None]:
    """(limit, remaining, reset ms) in requests or tokens."""
    if best is None:
        return None, None, None
    left, capacity, spec = best
    return capacity // MILLI, left // MILLI, reset_ms(spec, Level(left, 0))
