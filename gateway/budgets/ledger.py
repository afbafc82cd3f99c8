"""The BudgetLedger's state (a plain class the actor shell wraps): balances per account, leases per replica,
settlement of actual spend. Leases shrink as an account nears its limit, down to one request's need, so
concurrent replicas cannot overshoot it by more than what their in-flight calls under-estimated."""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.budgets.policy import Account
from gateway.budgets.store import Charge, LeaseRow, SpendStore

LEASE_TTL_S = 600.0  # a saved lease older than this, read after a restart, belongs to a replica that is gone
Loaded = tuple[tuple[int, int], dict[str, tuple[int, int, float]]]


@dataclass(frozen=True, slots=True)
class Lease:
    """Reservable amounts granted to one replica on one account (0, 0: refused)."""

    account: str
    picos: int
    tokens: int
    remaining_picos: int | None = None  # what was left before this grant (for a refusal's message)
    remaining_tokens: int | None = None

    @property
    def refused(self) -> bool:
        return self.picos == 0 and self.tokens == 0


def _share(left: int | None, want: int, need: int, holders: int) -> int | None:
    """What to grant of one quantity: None (no limit: all of `want`), 0 (not even `need` fits) or a share."""
    if left is None:
        return None
    if left < need:
        return 0
    return min(want, left, max(need, left // (2 * holders)))


class Ledger:
    def __init__(self, store: SpendStore) -> None:
        self._store = store
        self._spent: dict[str, list[int]] = {}  # settled spend of the accounts in use, read from the store lazily
        self._accounts: dict[str, Account] = {}
        self._leased: dict[str, dict[str, list[int]]] = {}  # account -> replica -> outstanding [picos, tokens]
        self._used: dict[str, float] = {}  # account -> last grant, settlement or release (monotonic)
        self._dirty: set[tuple[str, str]] = set()  # (account, replica) leases changed since the last save

    def loaded(self, account: str) -> bool:
        return account in self._spent

    def load(self, account: str) -> Loaded:
        """Read one account's settled spend and saved leases (blocking I/O; the actor runs it off its loop)."""
        return self._store.total(account), self._store.leases(account)

    def prime(self, account: str, loaded: Loaded) -> None:
        """Install what `load` read. Saved leases younger than LEASE_TTL_S count as outstanding again (a restarted
        ledger then knows what the replicas still hold); older ones belong to replicas that are gone."""
        if account in self._spent:
            return
        total, leases = loaded
        self._spent[account] = [total[0], total[1]]
        self._used[account] = time.monotonic()
        now = time.time()
        held = {r: [m, t] for r, (m, t, at) in leases.items() if now - at < LEASE_TTL_S and (m or t)}
        if held:
            self._leased.setdefault(account, {}).update(held)

    def _spent_of(self, account: str) -> list[int]:
        if account not in self._spent:
            self.prime(account, self.load(account))
        return self._spent[account]

    def forget_idle(self, idle_s: float, now: float | None = None) -> int:
        """Drop accounts with no lease outstanding, unused for `idle_s` (finished turns, past windows): their
        spend stays in the store, and is read again if they are used again. Returns how many were dropped."""
        now = time.monotonic() if now is None else now
        gone = [a for a, used in self._used.items()
                if now - used >= idle_s and not any(m or t for m, t in self._leased.get(a, {}).values())]  # fmt: skip
        for account in gone:
            for table in (self._spent, self._accounts, self._leased, self._used):
                table.pop(account, None)  # type: ignore[attr-defined]
        return len(gone)

    def grant(self, replica: str, account: Account, want: tuple[int, int], need: tuple[int, int]) -> Lease:
        """A lease of up to `want` (picos, tokens), never less than `need` (one request) unless refused."""
        self._accounts[account.id] = account
        self._used[account.id] = time.monotonic()
        spent = self._spent_of(account.id)
        leased = self._leased.setdefault(account.id, {})
        holders = len(leased.keys() | {replica})
        out_m = sum(v[0] for v in leased.values())
        out_t = sum(v[1] for v in leased.values())
        left_m = account.limit_picos - spent[0] - out_m if account.limit_picos is not None else None
        left_t = account.limit_tokens - spent[1] - out_t if account.limit_tokens is not None else None
        picos, tokens = _share(left_m, want[0], need[0], holders), _share(left_t, want[1], need[1], holders)
        if picos == 0 or tokens == 0:
            return Lease(account.id, 0, 0, left_m, left_t)
        picos = want[0] if picos is None else picos
        tokens = want[1] if tokens is None else tokens
        held = leased.setdefault(replica, [0, 0])
        held[0] += picos
        held[1] += tokens
        self._dirty.add((account.id, replica))
        return Lease(account.id, picos, tokens, left_m, left_t)

    def settle(self, replica: str, charges: list[Charge]) -> int:
        """Book actual spend (durably first); each charge also uses up the replica's lease on its accounts.
        Returns how many charges were new. (The actor runs the halves apart: `record`, `apply`, `persist`.)"""
        fresh = self.apply(replica, self._store.record(charges))
        self.persist(self.dirty_leases())
        return fresh

    def dirty_leases(self) -> list[LeaseRow]:
        """The leases changed since the last call, as rows to save (what each replica holds now)."""
        rows = []
        for account, replica in self._dirty:
            held = self._leased.get(account, {}).get(replica, [0, 0])
            rows.append((account, replica, held[0], held[1]))
        self._dirty.clear()
        return rows

    def redirty(self, rows: list[LeaseRow]) -> None:
        """A save that failed: those leases are saved again next time."""
        self._dirty.update((account, replica) for account, replica, _, _ in rows)

    def close(self) -> None:
        self._store.close()

    def spend_page(self, prefix: str, after: str | None, limit: int) -> tuple[list[tuple[str, int, int]], str | None]:
        """Settled totals of the accounts whose id starts with `prefix`, a page at a time (blocking I/O)."""
        return self._store.totals_page(prefix, after, limit)

    def persist(self, rows: list[LeaseRow]) -> None:
        """Save lease rows (blocking I/O)."""
        if rows:
            self._store.save_leases(rows)

    def record(self, charges: list[Charge]) -> list[Charge]:
        """The durable half of `settle` (blocking I/O: the actor runs it off its event loop)."""
        return self._store.record(charges)

    def apply(self, replica: str, fresh: list[Charge]) -> int:
        """The in-memory half of `settle`, for charges the store has just recorded for the first time."""
        now = time.monotonic()
        for charge in fresh:
            for account in charge.accounts:
                spent = self._spent.get(account)  # not loaded: the store has it, and is read when it is needed
                if spent is not None:
                    spent[0] += charge.picos
                    spent[1] += charge.tokens
                    self._used[account] = now
                held = self._leased.get(account, {}).get(replica)
                if held is not None:
                    held[0] = max(0, held[0] - charge.picos)
                    held[1] = max(0, held[1] - charge.tokens)
                    self._dirty.add((account, replica))
        return len(fresh)

    def release(self, replica: str, account: str, picos: int, tokens: int) -> None:
        """A replica gives back what it will not use (a window ended, it shuts down, it holds too much)."""
        held = self._leased.get(account, {}).get(replica)
        if held is not None:
            held[0] = max(0, held[0] - picos)
            held[1] = max(0, held[1] - tokens)
            self._dirty.add((account, replica))

    def status(self, account: str) -> dict[str, int | None]:
        spent = self._spent_of(account)
        leased = self._leased.get(account, {})
        reserved = [sum(v[0] for v in leased.values()), sum(v[1] for v in leased.values())]
        known = self._accounts.get(account)
        limit = (known.limit_picos, known.limit_tokens) if known is not None else (None, None)
        remaining = [None if lim is None else lim - s - r for lim, s, r in zip(limit, spent, reserved, strict=True)]
        return {
            "limit_picos": limit[0], "limit_tokens": limit[1], "spent_picos": spent[0], "spent_tokens": spent[1],
            "reserved_picos": reserved[0], "reserved_tokens": reserved[1],
            "remaining_picos": remaining[0], "remaining_tokens": remaining[1],
        }  # fmt: skip
