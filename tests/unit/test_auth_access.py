"""What a key may reach: models (globs, checked on the resolved route plan so fallbacks cannot route around them) and
budgets (its own org, key and user; an admin any)."""

from __future__ import annotations

import pytest

from gateway.auth.access import ROUTE_SCOPES, budget_org
from gateway.auth.models import check_model, scope_plan
from gateway.routing.planner import Candidate, RoutePlan
from gateway.schema import ErrorKind, GatewayError
from gateway.schema.principal import OPEN, Principal

KEY = Principal(key_id="key00001", via="key", org="acme", user="alice", models=("claude-*", "gpt-4o-mini"))


def _plan(*models: str, skipped: tuple[tuple[str, str], ...] = ()) -> RoutePlan:
    return RoutePlan(task_class="code", candidates=tuple(Candidate(m, f"reason {m}") for m in models),
                     skipped=skipped, kind="chat")  # fmt: skip


def _forbidden(call, code: str) -> GatewayError:  # type: ignore[no-untyped-def]
    with pytest.raises(GatewayError) as info:
        call()
    assert info.value.kind is ErrorKind.FORBIDDEN and info.value.status_code == 403 and info.value.code == code
    return info.value


# --- models ------------------------------------------------------------------------------------------------------


def test_check_model_matches_the_keys_globs() -> None:
    check_model(KEY, "claude-sonnet-4")
    check_model(KEY, "claude-3-5-haiku")
    check_model(KEY, "gpt-4o-mini")
    for model in ("gpt-4o", "gpt-4o-mini-2", "Claude-sonnet-4", "anthropic/claude-sonnet-4"):
        err = _forbidden(lambda m=model: check_model(KEY, m), "model_not_allowed")
        assert err.param == "model" and model in err.message
    check_model(None, "anything")  # no principal (internal calls)
    check_model(OPEN, "anything")
    check_model(KEY.model_copy(update={"models": ("*",)}), "anything")


def test_a_plan_loses_the_candidates_the_key_may_not_use_and_says_why() -> None:
    plan = _plan("gpt-4o", "claude-sonnet-4", "gemini-pro", "gpt-4o-mini", skipped=(("o1", "context too small"),))
    scoped = scope_plan(KEY, plan, "auto")
    assert [c.model for c in scoped.candidates] == ["claude-sonnet-4", "gpt-4o-mini"]  # order kept
    assert scoped.candidates[0].reason == "reason claude-sonnet-4"
    assert scoped.skipped == (
        ("o1", "context too small"),
        ("gpt-4o", "not allowed for key `key00001`"),
        ("gemini-pro", "not allowed for key `key00001`"),
    )
    assert (scoped.task_class, scoped.kind) == ("code", "chat")
    assert plan.candidates[0].model == "gpt-4o"  # the original plan is unchanged


def test_a_plan_the_key_fully_covers_is_returned_as_it_is() -> None:
    plan = _plan("claude-sonnet-4", "gpt-4o-mini")
    assert scope_plan(KEY, plan, "auto") is plan


def test_a_plan_with_nothing_left_is_403_naming_the_models() -> None:
    plan = _plan("gpt-4o", "gemini-pro")
    err = _forbidden(lambda: scope_plan(KEY, plan, "auto"), "model_not_allowed")
    assert err.param == "model" and "auto" in err.message and "gpt-4o" in err.message and "gemini-pro" in err.message


def test_open_or_no_principal_leaves_the_plan_untouched() -> None:
    plan = _plan("gpt-4o", "gemini-pro")
    assert scope_plan(OPEN, plan, "auto") is plan
    assert scope_plan(None, plan, "auto") is plan
    narrow_open = OPEN.model_copy(update={"models": ("nothing-*",)})  # open mode is never narrowed
    assert scope_plan(narrow_open, plan, "auto") is plan


# --- budgets -----------------------------------------------------------------------------------------------------

ADMIN = Principal(key_id="adminkey", via="key", org="acme", scopes=("admin",))
BOOTSTRAP = Principal(key_id="admin-123", via="admin_key", org=None, scopes=("admin",))


def test_an_admin_reads_any_org_and_defaults_to_its_own() -> None:
    assert budget_org(ADMIN, "org", "globex", "globex") == "globex"
    assert budget_org(ADMIN, "user", "bob", None) == "acme"
    assert budget_org(ADMIN, "global", "*", None) == "acme"
    assert budget_org(ADMIN, "daemon", "executor", "globex") == "globex"
    assert budget_org(ADMIN, "key", "otherkey", None) == "acme"
    assert budget_org(BOOTSTRAP, "org", "globex", "globex") == "globex"


def test_a_key_reads_its_own_org_key_user_and_turns() -> None:
    assert budget_org(KEY, "org", "acme", None) == "acme"
    assert budget_org(KEY, "org", "acme", "acme") == "acme"
    assert budget_org(KEY, "key", "key00001", None) == "acme"
    assert budget_org(KEY, "user", "alice", None) == "acme"
    assert budget_org(KEY, "turn", "turn-1", None) == "acme"


@pytest.mark.parametrize(
    ("scope", "key", "org"),
    [
        ("org", "globex", None),  # another org's account
        ("org", "globex", "globex"),
        ("user", "alice", "globex"),  # a same-named user of another org
        ("key", "key00002", None),  # another key
        ("user", "bob", None),  # another user of its org
        ("global", "*", None),
        ("daemon", "executor", None),
        ("turn", "turn-1", "globex"),
    ],
)
def test_a_key_cannot_read_other_budgets(scope: str, key: str, org: str | None) -> None:
    err = _forbidden(lambda: budget_org(KEY, scope, key, org), "admin_required")
    assert "admin" in err.message


def test_a_key_that_may_set_users_reads_any_user_of_its_org_only() -> None:
    service = KEY.model_copy(update={"may_set_user": True, "user": None})
    assert budget_org(service, "user", "bob", None) == "acme"
    assert budget_org(service, "user", "carol", "acme") == "acme"
    _forbidden(lambda: budget_org(service, "user", "bob", "globex"), "admin_required")
    _forbidden(lambda: budget_org(service, "key", "key00002", None), "admin_required")


def test_admin_routes_need_the_admin_scope_and_reads_need_none() -> None:
    assert all(ROUTE_SCOPES[r] == "admin" for r in ROUTE_SCOPES if r.startswith(("keys.", "policy", "providers")))
    assert ROUTE_SCOPES["chat.completions"] == ROUTE_SCOPES["messages"] == "chat"
    assert ROUTE_SCOPES["embeddings"] == "embeddings"
    assert ROUTE_SCOPES["models"] is None and ROUTE_SCOPES["budgets"] is None
