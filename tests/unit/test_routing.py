"""Route planning and the retry/fallback decision: pure functions of the policy."""

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.routing.planner import plan_route
from gateway.routing.policy import Retry, RoutingPolicy, load_policy
from gateway.routing.retry import decide
from gateway.schema import ChatRequest, GatewayError

CATALOG = load_config().models
POLICY = load_policy(Path(__file__).parents[2] / "policies" / "routing.yaml", CATALOG)


def _req(text="hi", **kw) -> ChatRequest:
    return ChatRequest(model="auto", messages=[{"role": "user", "content": text}], **kw)


def test_the_shipped_policy_has_the_seed_chains():
    assert POLICY.task_classes["planning"].candidates[:3] == (
        "bedrock-claude-sonnet-4-5",
        "claude-sonnet-4-5",
        "gpt-4o",
    )
    assert POLICY.task_classes["quick"].candidates[0] == "bedrock-claude-3-haiku"
    assert POLICY.task_classes["code"].candidates == ("gpt-4o-mini", "claude-haiku-4-5")


def test_task_class_is_given_or_inferred():
    assert plan_route(_req(metadata={"task_class": "planning"}), POLICY, CATALOG).task_class == "planning"
    assert plan_route(_req(response_format={"type": "json_object"}), POLICY, CATALOG).task_class == "code"
    assert plan_route(_req("word " * 40_000), POLICY, CATALOG).task_class == "planning"
    assert plan_route(_req(), POLICY, CATALOG).task_class == "quick"


def test_models_that_cannot_serve_the_request_are_skipped_with_a_reason():
    image = ChatRequest(model="auto", metadata={"task_class": "quick"}, messages=[{"role": "user", "content": [
        {"type": "text", "text": "x"}, {"type": "image", "url": "https://example.invalid/a.png"}]}])  # fmt: skip
    plan = plan_route(image, POLICY, CATALOG)
    assert all(CATALOG[c.model].capabilities.images for c in plan.candidates)
    huge = plan_route(_req("word " * 600_000, metadata={"task_class": "planning"}), POLICY, CATALOG)
    assert [c.model for c in huge.candidates] == ["gemini-2.5-pro"]  # the only window that fits ~600k tokens
    assert any("context window" in why for _, why in huge.skipped)


def test_requested_model_then_its_fallbacks_and_org_rules():
    plan = plan_route(ChatRequest(model="gpt-4o", fallbacks=["gemini-2.5-flash", "nope"],
                                  messages=[{"role": "user", "content": "x"}]), POLICY, CATALOG)  # fmt: skip
    assert [c.model for c in plan.candidates] == ["gpt-4o", "gemini-2.5-flash"] and plan.skipped[0][0] == "nope"
    policy = RoutingPolicy.model_validate({**POLICY.model_dump(), "orgs": {"acme": {"deny": ["gpt-4o-mini"]}}})
    plan = plan_route(_req(metadata={"org": "acme", "task_class": "code"}), policy, CATALOG)
    assert [c.model for c in plan.candidates] == ["claude-haiku-4-5"]


def test_unknown_models_in_a_policy_fail_at_load(tmp_path):
    bad = tmp_path / "routing.yaml"
    bad.write_text("task_classes: {quick: {candidates: [gpt-5-ultra]}}\n")
    with pytest.raises(ConfigError, match=r"task_classes\.quick\.candidates\.0: unknown model `gpt-5-ultra`"):
        load_policy(bad, CATALOG)


RULES = Retry(per_candidate=2, total=4, backoff_base_s=0.2, backoff_max_s=2.0, max_retry_after_s=5)


@pytest.mark.parametrize(
    ("error", "tries", "total", "action"),
    [
        (GatewayError("server", "x"), 1, 1, "retry"),
        (GatewayError("server", "x"), 2, 2, "fallback"),  # this model's attempts are spent
        (GatewayError("rate_limited", "x", retry_after=1), 1, 1, "retry"),
        (GatewayError("rate_limited", "x", retry_after=60), 1, 1, "fallback"),  # too long to wait
        (GatewayError("context_length", "x"), 1, 1, "fallback"),  # never the same model again
        (GatewayError("content_filtered", "x"), 1, 1, "stop"),
        (GatewayError("bad_request", "x"), 1, 1, "stop"),
        (GatewayError("server", "x"), 1, 4, "stop"),  # the plan's budget is spent
    ],
)
def test_retry_decisions(error, tries, total, action):
    assert decide(error, tries, total, RULES, rand=0.5).action == action


def test_backoff_grows_and_honours_retry_after():
    assert decide(GatewayError("rate_limited", "x", retry_after=1.5), 1, 1, RULES).delay_s == 1.5
    first = decide(GatewayError("overloaded", "x"), 1, 1, RULES, rand=1.0).delay_s
    assert first == pytest.approx(0.2)
    assert decide(GatewayError("overloaded", "x"), 1, 1, RULES, rand=0.0).delay_s == pytest.approx(0.1)


def test_breaker_opens_probes_and_closes():
    from gateway.routing.breaker import Breaker

    now = [0.0]
    b = Breaker(threshold=2, cooldown_s=10, probes=1, clock=lambda: now[0])
    b.failure()
    assert b.allow() and b.state == "closed"
    b.failure()
    assert b.state == "open" and not b.allow() and b.retry_in() == 1  # a first opening is short
    now[0] = 1.0
    assert b.allow() and b.state == "half_open"
    assert not b.allow()  # one probe at a time
    b.failure()
    assert b.state == "open" and not b.allow() and b.retry_in() == 2  # the probe failed: open again, twice as long
    now[0] = 3.0
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow() and b.failures == 0


def test_only_health_failures_count():
    from gateway.routing.breaker import BreakerBoard

    board = BreakerBoard(threshold=1)
    board.record("p", "m", GatewayError("bad_request", "x"))
    board.record("p", "m", GatewayError("content_filtered", "x"))
    assert board.get("p", "m").state == "closed"
    board.record("p", "m", GatewayError("overloaded", "x"))
    assert board.states() == {"p/m": "open"}


def test_a_probe_answered_with_a_non_health_error_closes_the_breaker():
    from gateway.routing.breaker import BreakerBoard

    now = [0.0]
    board = BreakerBoard(threshold=1, cooldown_s=5, clock=lambda: now[0])
    board.record("p", "m", GatewayError("server", "x"))
    now[0] = 6.0
    assert board.get("p", "m").allow()  # the half-open probe
    board.record("p", "m", GatewayError("bad_request", "x"))  # the provider answered: it is up
    assert board.get("p", "m").state == "closed" and board.get("p", "m").allow()


def test_fallbacks_without_a_policy_and_unfit_candidates_are_skipped():
    request = ChatRequest(model="gpt-4o-mini", fallbacks=["claude-haiku-4-5", "o4-mini"], max_tokens=20_000,
                          messages=[{"role": "user", "content": "x"}])  # fmt: skip
    plan = plan_route(request, None, CATALOG)  # the caller's fallbacks need no policy
    assert [c.model for c in plan.candidates] == ["claude-haiku-4-5", "o4-mini"]
    assert plan.skipped == (("gpt-4o-mini", "max_tokens above its 16384 output tokens"),)
    with pytest.raises(GatewayError, match="routing policy"):
        plan_route(request.model_copy(update={"model": "auto"}), None, CATALOG)


def test_embeddings_auto_takes_the_chain_and_skips_models_without_the_dimensions():
    from gateway.routing.planner import plan_embeddings
    from gateway.schema import EmbeddingsRequest

    def plan(**kw):
        return plan_embeddings(EmbeddingsRequest(model="auto", texts=["x"], **kw), POLICY, CATALOG)

    assert [c.model for c in plan().candidates] == ["titan-embed-text-v2", "text-embedding-3-small"]
    wide = plan(dimensions=1536)
    assert [c.model for c in wide.candidates] == ["text-embedding-3-small"] and wide.skipped[0][
        0
    ] == "titan-embed-text-v2"
    with pytest.raises(GatewayError) as info:
        plan(dimensions=4096)
    assert info.value.param == "dimensions" and "1536 dimensions < the 4096" in info.value.message


def test_budget_tiers_narrow_the_chain_and_an_unknown_tier_names_the_field():
    economy = plan_route(_req(metadata={"task_class": "planning", "budget_tier": "economy"}), POLICY, CATALOG)
    assert [c.model for c in economy.candidates] == ["bedrock-claude-3-haiku", "gpt-4o-mini", "gemini-2.5-flash"]
    asked = ChatRequest(model="gpt-4o", messages=[{"role": "user", "content": "x"}], fallbacks=["gpt-4o-mini"],
                        metadata={"budget_tier": "economy"})  # fmt: skip
    narrowed = plan_route(asked, POLICY, CATALOG)
    assert [c.model for c in narrowed.candidates] == ["gpt-4o-mini"] and narrowed.skipped[0][0] == "gpt-4o"
    premium = plan_route(_req(metadata={"task_class": "planning", "budget_tier": "premium"}), POLICY, CATALOG)
    assert premium.candidates[0].model == "bedrock-claude-sonnet-4-5"
    with pytest.raises(GatewayError) as info:
        plan_route(_req(metadata={"budget_tier": "platinum"}), POLICY, CATALOG)
    assert info.value.param == "gateway.budget_tier" and "economy" in info.value.message
