"""What models a principal may reach: checked after route resolution, so `auto` chains, fallbacks, continuations
and budget downgrades are filtered too (never a side route around a key's scope)."""

from __future__ import annotations

from dataclasses import replace

from gateway.routing.planner import RoutePlan
from gateway.schema import GatewayError, forbidden
from gateway.schema.principal import Principal


def not_allowed(principal: Principal, model: str) -> GatewayError:
    return forbidden("model_not_allowed", f"this key may not use model `{model}`", param="model")


def check_model(principal: Principal | None, model: str) -> None:
    """A model the caller named itself: 403 `model_not_allowed` if the key does not cover it."""
    if principal is not None and not principal.allows_model(model):
        raise not_allowed(principal, model)


def scope_plan(principal: Principal | None, plan: RoutePlan, requested: str) -> RoutePlan:
    """The plan without the candidates the key may not use (named in `skipped`); none left: 403."""
    if principal is None or principal.is_open:
        return plan
    keep = tuple(c for c in plan.candidates if principal.allows_model(c.model))
    if len(keep) == len(plan.candidates):
        return plan
    if not keep:
        raise forbidden("model_not_allowed", f"this key may use none of the models that could serve `{requested}` "
                        f"({', '.join(c.model for c in plan.candidates)})", param="model")  # fmt: skip
    dropped = tuple((c.model, f"not allowed for key `{principal.key_id}`") for c in plan.candidates if c not in keep)
    return replace(plan, candidates=keep, skipped=plan.skipped + dropped)
