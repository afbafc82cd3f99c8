"""Binding a request's claimed identity to its credential: org and user come from the key, a daemon from the ones it
may act as, a budget tier from the key when it has one; a claim that contradicts the credential is a 403 naming it."""

from __future__ import annotations

import pytest

from gateway.auth.identity import bind, bind_metadata
from gateway.schema import ChatRequest, ErrorKind, GatewayError, GatewayMetadata
from gateway.schema.principal import OPEN, Principal

KEY = Principal(key_id="key00001", via="key", org="acme", user="alice", daemons=("executor",))


def _p(**fields: object) -> Principal:
    return KEY.model_copy(update=fields)


def _forbidden(principal: Principal, claimed: GatewayMetadata, code: str, param: str) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        bind_metadata(principal, claimed)
    err = info.value
    assert err.kind is ErrorKind.FORBIDDEN and err.status_code == 403
    assert (err.code, err.param) == (code, param)
    return err


def test_org_user_and_the_principal_come_from_the_key() -> None:
    bound = bind_metadata(KEY, GatewayMetadata())
    assert (bound.org, bound.user, bound.daemon, bound.principal) == ("acme", "alice", "executor", KEY)


def test_claims_that_agree_with_the_key_are_accepted() -> None:
    bound = bind_metadata(KEY, GatewayMetadata(org="acme", user="alice", daemon="executor"))
    assert (bound.org, bound.user, bound.daemon) == ("acme", "alice", "executor")


def test_another_org_is_refused_naming_both() -> None:
    err = _forbidden(KEY, GatewayMetadata(org="globex"), "identity_mismatch", "org")
    assert "acme" in err.message and "globex" in err.message


def test_naming_another_user_needs_may_set_user() -> None:
    _forbidden(KEY, GatewayMetadata(user="mallory"), "identity_mismatch", "user")
    _forbidden(_p(user=None), GatewayMetadata(user="mallory"), "identity_mismatch", "user")
    service = _p(user=None, may_set_user=True)
    assert bind_metadata(service, GatewayMetadata(user="bob")).user == "bob"
    assert bind_metadata(service, GatewayMetadata()).user is None
    assert bind_metadata(_p(may_set_user=True), GatewayMetadata(user="bob")).user == "bob"
    assert bind_metadata(_p(may_set_user=True), GatewayMetadata()).user == "alice"  # the key's own by default


def test_a_daemon_the_key_may_not_act_as_is_refused_listing_what_it_may() -> None:
    err = _forbidden(KEY, GatewayMetadata(daemon="router"), "daemon_not_allowed", "daemon")
    assert "router" in err.message and "executor" in err.message
    err = _forbidden(_p(daemons=()), GatewayMetadata(daemon="router"), "daemon_not_allowed", "daemon")
    assert "none" in err.message


def test_the_daemon_defaults_only_for_a_single_daemon_key() -> None:
    assert bind_metadata(KEY, GatewayMetadata()).daemon == "executor"
    two = _p(daemons=("executor", "evaluator"))
    assert bind_metadata(two, GatewayMetadata()).daemon is None
    assert bind_metadata(two, GatewayMetadata(daemon="evaluator")).daemon == "evaluator"
    assert bind_metadata(_p(daemons=()), GatewayMetadata()).daemon is None


def test_a_caller_supplied_principal_is_refused() -> None:
    forged = GatewayMetadata(principal=_p(org="globex", scopes=("admin",)))
    for principal in (KEY, OPEN):  # even in open mode
        with pytest.raises(GatewayError) as info:
            bind_metadata(principal, forged)
        assert info.value.kind is ErrorKind.BAD_REQUEST and info.value.param == "gateway.principal"


def test_open_mode_keeps_the_claimed_identity() -> None:
    claimed = GatewayMetadata(org="anyorg", user="anyone", daemon="router", budget_tier="gold", turn_id="t1")
    bound = bind_metadata(OPEN, claimed)
    assert bound.principal is OPEN
    assert bound.model_dump(exclude={"principal"}) == claimed.model_dump(exclude={"principal"})


def test_budget_tier_rules() -> None:
    assert bind_metadata(KEY, GatewayMetadata(budget_tier="bronze")).budget_tier == "bronze"  # untiered key: chooses
    assert bind_metadata(KEY, GatewayMetadata()).budget_tier is None
    gold = _p(budget_tier="gold")
    assert bind_metadata(gold, GatewayMetadata()).budget_tier == "gold"
    assert bind_metadata(gold, GatewayMetadata(budget_tier="gold")).budget_tier == "gold"
    err = _forbidden(gold, GatewayMetadata(budget_tier="bronze"), "identity_mismatch", "budget_tier")
    assert "gold" in err.message and "bronze" in err.message


def test_the_callers_hints_pass_through() -> None:
    claimed = GatewayMetadata(turn_id="turn-9", task_class="code", latency_target_ms=800, deadline=2e9,
                              timeout_ms=5_000)  # fmt: skip
    bound = bind_metadata(KEY, claimed)
    assert (bound.turn_id, bound.task_class, bound.latency_target_ms, bound.deadline, bound.timeout_ms) == (
        "turn-9", "code", 800, 2e9, 5_000,
    )  # fmt: skip


def test_bind_rebinds_a_requests_metadata_and_nothing_else() -> None:
    request = ChatRequest(model="claude-sonnet-4", messages=[{"role": "user", "content": "hi"}],
                          metadata=GatewayMetadata(turn_id="t"))  # fmt: skip
    bound = bind(KEY, request)
    assert bound.metadata.principal == KEY and bound.metadata.org == "acme" and bound.metadata.turn_id == "t"
    assert bound.model_dump(exclude={"metadata"}) == request.model_dump(exclude={"metadata"})
    assert request.metadata.principal is None  # the caller's request is not changed
