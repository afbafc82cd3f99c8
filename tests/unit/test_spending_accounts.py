"""Which accounts a caller spends from, as the pipeline asks for them (cached per caller): the key a call is made
with is part of the caller, so two keys of one org, user and daemon never share a `key`-scope account."""

from __future__ import annotations

from decimal import Decimal

from gateway.budgets.gate import BudgetGate
from gateway.budgets.policy import Budget, BudgetPolicy
from gateway.budgets.spending import Spending
from gateway.pricing import Pricer
from gateway.schema import GatewayMetadata
from gateway.schema.principal import OPEN, Principal
from gateway.tokens import TokenEstimator

POLICY = BudgetPolicy(
    budgets={
        "per-key": Budget(scope="key", window="day", limit_usd=Decimal("5")),
        "per-user": Budget(scope="user", window="month", limit_tokens=1_000_000),
    }
)


def _spending() -> Spending:
    return Spending(POLICY, BudgetGate(), Pricer(), TokenEstimator(), lambda provider: "openai")


def _meta(key_id: str, principal: Principal | None = None) -> GatewayMetadata:
    principal = principal or Principal(key_id=key_id, via="key", org="acme", user="alice", daemons=("executor",))
    return GatewayMetadata(org="acme", user="alice", daemon="executor", principal=principal)


def _keys(accounts: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {a.budget: a.key for a in accounts}


def test_two_keys_of_one_caller_spend_from_their_own_key_accounts() -> None:
    spending = _spending()
    one = spending.accounts(_meta("key00001"))
    two = spending.accounts(_meta("key00002"))
    assert _keys(one) == {"per-key": "key00001", "per-user": "acme/alice"}
    assert _keys(two) == {"per-key": "key00002", "per-user": "acme/alice"}  # the user's account is shared
    assert spending.accounts(_meta("key00001")) == one  # the cache answers for the first key as before


def test_a_rotated_key_keeps_its_account() -> None:
    spending = _spending()
    before = _meta("key00001")
    after = _meta("key00001", before.principal.model_copy(update={"name": "renamed"}))  # type: ignore[union-attr]
    assert _keys(spending.accounts(before)) == _keys(spending.accounts(after))


def test_open_mode_and_no_principal_have_no_key_account() -> None:
    spending = _spending()
    assert _keys(spending.accounts(_meta("open", OPEN))) == {"per-user": "acme/alice"}
    assert _keys(spending.accounts(GatewayMetadata(org="acme", user="alice"))) == {"per-user": "acme/alice"}
    assert "per-key" in _keys(spending.accounts(_meta("key00003")))  # the cached open callers do not leak into keys
