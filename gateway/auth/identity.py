"""Binding a request's claimed identity to its principal: org and user come from the credential, a daemon from the
ones it may act as; a claim that contradicts the credential is refused (403), never silently replaced."""

from __future__ import annotations

from typing import TypeVar

from gateway.schema import ChatRequest, EmbeddingsRequest, GatewayMetadata, forbidden, validation_error
from gateway.schema.principal import Principal

R = TypeVar("R", ChatRequest, EmbeddingsRequest)


def bind_metadata(principal: Principal, claimed: GatewayMetadata) -> GatewayMetadata:
    """The metadata a request runs with: the principal's identity plus the caller's hints (turn, task class,
    latency target, deadline), or a 403 naming the claim that contradicts the credential."""
    if claimed.principal is not None:
        raise validation_error("gateway.principal", "is set by the gateway from the credential, not by the caller")
    if principal.is_open:  # open mode (loopback, offline): identity is what the caller says, as before keys
        return claimed.model_copy(update={"principal": principal})
    return claimed.model_copy(
        update={
            "principal": principal,
            "org": _org(principal, claimed.org),
            "user": _user(principal, claimed.user),
            "daemon": _daemon(principal, claimed.daemon),
            "budget_tier": _tier(principal, claimed.budget_tier),
        }
    )


def bind(principal: Principal, request: R) -> R:
    return request.model_copy(update={"metadata": bind_metadata(principal, request.metadata)})


def _org(principal: Principal, claimed: str | None) -> str | None:
    if claimed is not None and claimed != principal.org:
        raise forbidden("identity_mismatch", f"this key belongs to org `{principal.org}`; it cannot act for org "
                        f"`{claimed}` (x-gateway-org)", param="org")  # fmt: skip
    return principal.org


def _user(principal: Principal, claimed: str | None) -> str | None:
    if claimed is None or claimed == principal.user:
        return principal.user
    if principal.may_set_user:
        return claimed
    raise forbidden("identity_mismatch", "this key may not name end users (x-gateway-user needs a key with "
                    "`may_set_user`)", param="user")  # fmt: skip


def _daemon(principal: Principal, claimed: str | None) -> str | None:
    if claimed is None:
        return principal.daemons[0] if len(principal.daemons) == 1 else None
    if claimed not in principal.daemons:
        allowed = ", ".join(principal.daemons) or "none"
        raise forbidden("daemon_not_allowed", f"this key may not act as daemon `{claimed}` (it may act as: "
                        f"{allowed})", param="daemon")  # fmt: skip
    return claimed


def _tier(principal: Principal, claimed: str | None) -> str | None:
    if principal.budget_tier is None:
        return claimed  # a key without a tier may choose one (tiers only narrow what a call may use)
    if claimed is not None and claimed != principal.budget_tier:
        raise forbidden("identity_mismatch", f"this key's budget tier is `{principal.budget_tier}`; it cannot "
                        f"choose `{claimed}`", param="budget_tier")  # fmt: skip
    return principal.budget_tier
