"""A replica's side of the budgets: local balances leased from the ledger, a reservation per call, and the
charges it settles in batches. A request makes an actor call only when a balance cannot cover it; a charge stays
in the outbox until the ledger has acknowledged it (settlement is idempotent, so resending is safe)."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.budgets.ledger import Lease
from gateway.budgets.policy import PICOS, Account, usd_text
from gateway.budgets.store import Charge
from gateway.schema import ErrorKind, GatewayError

CONTENDED_ROUNDS, CONTENDED_S = 50, 5.0  # a call that fits keeps asking this long before a retryable 503
REFUSAL_TTL_S = 1.0  # a refusal is reused locally this long (spend settles and windows roll meanwhile)
IDLE_S = 120.0  # an account unused this long (a finished turn, yesterday's window) is given back to the ledger
Granter = Callable[[Account, tuple[int, int], tuple[int, int]], Awaitable[Lease | None]]


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    accounts: tuple[Account, ...]
    picos: int
    tokens: int


class BudgetRefused(GatewayError):
    """budget_exceeded for one account, with what this replica could still spend on it (its local balance plus
    what the ledger has left unleased; None: that quantity has no limit) — the target a shrink or downgrade fits."""

    def __init__(self, message: str, account: Account, available: tuple[int | None, int | None]) -> None:
        super().__init__(ErrorKind.BUDGET_EXCEEDED, message, retryable=False)
        self.account, self.available = account, available

    def __reduce__(self) -> tuple[Any, ...]:  # crosses a process as the plain GatewayError it is to a client
        return GatewayError(self.kind, self.message, **self._state()).__reduce__()


def to_picos(usd: Decimal) -> int:
    return int((usd * PICOS).to_integral_value(rounding="ROUND_CEILING"))


class BudgetGate:
    """A replica's side of the budgets: balances leased from the ledger per account, reservations held against
    them, settled charges queued for the ledger (the outbox), idle balances given back (releases)."""

    def __init__(self, chunk_picos: int = 5 * 10**11, chunk_tokens: int = 200_000) -> None:
        self._chunk = (chunk_picos, chunk_tokens)
        self._balance: dict[str, list[int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._refusals: dict[str, tuple[float, tuple[int, int], Lease]] = {}
        self.outbox: list[Charge] = []
        self.granter: Granter | None = None
        self._used: dict[str, float] = {}  # account -> last reservation or settlement (monotonic)
        self._held: dict[str, list[int]] = {}  # account -> reservations not yet settled: [count, picos, tokens]
        self._accounts: dict[str, Account] = {}
        self.releases: list[tuple[str, int, int]] = []  # forgotten balances the ledger has not taken back yet

    @staticmethod
    def _need(account: Account, picos: int, tokens: int) -> tuple[int, int]:
        return (picos if account.limit_picos is not None else 0, tokens if account.limit_tokens is not None else 0)

    def _covers(self, account: Account, picos: int, tokens: int) -> bool:
        balance, need = self._balance.get(account.id, (0, 0)), self._need(account, picos, tokens)
        return balance[0] >= need[0] and balance[1] >= need[1]

    async def reserve(self, accounts: list[Account], picos: int, tokens: int) -> Reservation:
        """Hold `picos` / `tokens` on every account, or raise budget_exceeded naming the budget, what is left
        and the estimate. Fails closed: with the ledger unreachable, only what is already leased can be spent."""
        started = time.monotonic()
        for round_ in itertools.count():  # a concurrent request may spend a balance while this one waits for a grant
            short = [a for a in accounts if not self._covers(a, picos, tokens)]
            if not short:
                return self._hold(accounts, picos, tokens)
            if round_ >= CONTENDED_ROUNDS or time.monotonic() - started > CONTENDED_S:
                raise GatewayError(ErrorKind.OVERLOADED, "budget grants are contended (the call fits, but concurrent "
                                   "calls spent each grant first); try again", retry_after=0.1)  # fmt: skip
            for a in short:
                await self._top_up(a, self._need(a, picos, tokens), picos, tokens)
        raise AssertionError("unreachable")

    def _hold(self, accounts: list[Account], picos: int, tokens: int) -> Reservation:
        now = time.monotonic()
        for a in accounts:
            need, balance = self._need(a, picos, tokens), self._balance[a.id]
            balance[0] -= need[0]
            balance[1] -= need[1]
            self._used[a.id] = now
            held = self._held.setdefault(a.id, [0, 0, 0])
            held[0], held[1], held[2] = held[0] + 1, held[1] + need[0], held[2] + need[1]
        return Reservation(uuid.uuid4().hex, tuple(accounts), picos, tokens)

    async def _top_up(self, account: Account, need: tuple[int, int], picos: int, tokens: int) -> None:
        """One grant in flight per account: concurrent requests wait for it instead of asking again."""
        lock = self._locks.setdefault(account.id, asyncio.Lock())
        async with lock:
            if self._covers(account, picos, tokens):
                return
            refusal = self._refusals.get(account.id)
            if refusal is not None and time.monotonic() - refusal[0] < REFUSAL_TTL_S and need >= refusal[1]:
                raise self._exceeded(account, refusal[2], picos, tokens, self._balance.get(account.id))  # no 2nd call
            await self._grant(account, need, picos, tokens)

    def _target(self, account_id: str) -> tuple[int, int]:
        """The balance a replica aims to hold: a lease chunk, or twice what its calls have reserved in flight
        (so a busy replica with large worst cases does not ask the ledger every few calls)."""
        held = self._held.get(account_id, (0, 0, 0))
        return max(self._chunk[0], 2 * held[1]), max(self._chunk[1], 2 * held[2])

    async def _grant(self, account: Account, need: tuple[int, int], picos: int, tokens: int) -> None:
        balance = self._balance.setdefault(account.id, [0, 0])
        self._used[account.id] = time.monotonic()
        self._accounts[account.id] = account
        missing = (max(0, need[0] - balance[0]), max(0, need[1] - balance[1]))
        target = self._target(account.id)
        lease = await self.granter(account, (max(target[0], missing[0]), max(target[1], missing[1])),
                                   missing) if self.granter is not None else None  # fmt: skip
        if lease is None:
            raise GatewayError(ErrorKind.BUDGET_EXCEEDED, f"budget `{account.budget}` cannot be checked (the ledger is "
                               "unreachable) and this replica's lease is spent", retryable=False)  # fmt: skip
        if lease.refused:
            self._refusals[account.id] = (time.monotonic(), need, lease)
            raise self._exceeded(account, lease, picos, tokens, balance)
        balance[0] += lease.picos
        balance[1] += lease.tokens

    @staticmethod
    def _exceeded(account: Account, lease: Lease, picos: int, tokens: int, balance: list[int] | None) -> BudgetRefused:
        local = balance or (0, 0)
        avail = (
            None if lease.remaining_picos is None else max(0, lease.remaining_picos) + local[0],
            None if lease.remaining_tokens is None else max(0, lease.remaining_tokens) + local[1],
        )
        left = f"${usd_text(avail[0])}" if avail[0] is not None else f"{avail[1] or 0} tokens"
        return BudgetRefused(f"budget `{account.budget}` ({account.key}, window {account.window}) has {left} left; "
                             f"this call is estimated at ${usd_text(picos)} and {tokens} tokens", account,
                             avail)  # fmt: skip

    @staticmethod
    def limits_picos(reservation: Reservation) -> bool:
        return any(a.limit_picos is not None for a in reservation.accounts)

    @staticmethod
    def limits_tokens(reservation: Reservation) -> bool:
        return any(a.limit_tokens is not None for a in reservation.accounts)

    def merge(self, reservation: Reservation, extra: Reservation) -> Reservation:
        """One reservation holding both (a stream's extension): settled once, under the first one's id."""
        for a in extra.accounts:
            held = self._held.get(a.id)
            if held is not None:
                held[0] -= 1  # its amounts stay held until the merged reservation settles
        return Reservation(reservation.id, reservation.accounts, reservation.picos + extra.picos,
                           reservation.tokens + extra.tokens)  # fmt: skip

    def settle(self, reservation: Reservation, picos: int, tokens: int) -> None:
        """The call's actual spend: the unused part of the reservation returns to the local balances."""
        now = time.monotonic()
        for a in reservation.accounts:
            self._used[a.id] = now
            held = self._need(a, reservation.picos, reservation.tokens)
            spent = self._need(a, picos, tokens)
            balance = self._balance.setdefault(a.id, [0, 0])
            balance[0] += held[0] - spent[0]
            balance[1] += held[1] - spent[1]
            inflight = self._held.get(a.id)
            if inflight is not None:
                inflight[0], inflight[1], inflight[2] = inflight[0] - 1, inflight[1] - held[0], inflight[2] - held[1]
        if picos or tokens:
            self.outbox.append(Charge(reservation.id, tuple(a.id for a in reservation.accounts), picos, tokens))

    def idle(self, idle_s: float = IDLE_S, now: float | None = None) -> list[tuple[str, int, int]]:
        """Forget accounts nobody has used for `idle_s` and that hold no reservation; their balances (account,
        picos, tokens) join `releases`, which the ledger takes back. Keeps a replica's memory flat across turns."""
        now = time.monotonic() if now is None else now
        out = self.releases
        for account, used in list(self._used.items()):
            lock = self._locks.get(account)
            if now - used < idle_s or self._held.get(account, (0,))[0] > 0 or (lock is not None and lock.locked()):
                continue
            balance = self._balance.pop(account, [0, 0])
            for table in (self._used, self._held, self._locks, self._refusals, self._accounts):
                table.pop(account, None)  # type: ignore[attr-defined]
            out.append((account, max(0, balance[0]), max(0, balance[1])))
        return out

    def wants(self) -> list[tuple[Account, tuple[int, int]]]:
        """Accounts whose balance fell below half its target, and what would fill it: the background sync
        asks for these, so a request rarely waits for a grant. Not while a grant or a recent refusal stands."""
        now, out = time.monotonic(), []
        for account_id, account in self._accounts.items():
            lock, refusal = self._locks.get(account_id), self._refusals.get(account_id)
            if (lock is not None and lock.locked()) or (refusal is not None and now - refusal[0] < REFUSAL_TTL_S):
                continue
            balance, target = self._balance.get(account_id, (0, 0)), self._target(account_id)
            low_m = account.limit_picos is not None and balance[0] < target[0] // 2
            low_t = account.limit_tokens is not None and balance[1] < target[1] // 2
            if low_m or low_t:
                out.append((account, (max(0, target[0] - balance[0]), max(0, target[1] - balance[1]))))
        return out

    def install(self, account: Account, lease: Lease) -> None:
        """A background grant: added to the balance (a refusal is not cached: no request asked)."""
        if account.id in self._accounts and not lease.refused:
            balance = self._balance.setdefault(account.id, [0, 0])
            balance[0] += lease.picos
            balance[1] += lease.tokens

    def released(self, releases: list[tuple[str, int, int]]) -> None:
        done = set(releases)
        self.releases = [r for r in self.releases if r not in done]

    def take_outbox(self, limit: int = 500) -> list[Charge]:
        return self.outbox[:limit]

    def acknowledged(self, charges: list[Charge]) -> None:
        done = {c.id for c in charges}
        self.outbox = [c for c in self.outbox if c.id not in done]
