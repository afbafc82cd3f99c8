"""What each HTTP route needs of its caller (one table), and whose budgets a caller may read."""

from __future__ import annotations

from types import MappingProxyType

from gateway.schema import GatewayError, forbidden
from gateway.schema.principal import Principal, Scope

# route -> the scope a caller needs (None: any authenticated caller). Unlisted routes (health) are open.
ROUTE_SCOPES: MappingProxyType[str, Scope | None] = MappingProxyType(
    {
        "chat.completions": "chat",
        "messages": "chat",
        "gateway.chat": "chat",
        "gateway.route": "chat",
        "embeddings": "embeddings",
        "redact": None,  # PII redaction of the caller's own texts: nothing leaves the gateway
        "models": None,
        "budgets": None,  # a caller reads its own; other accounts need `admin` (budget_org below)
        "limits": None,  # the same rule as budgets
        "providers": "admin",
        "policy": "admin",
        "policy.reload": "admin",
        "rules": "admin",  # limits and budgets set at run time, and the settled-spend export
        "keys.create": "admin",
        "keys.list": "admin",
        "keys.get": "admin",
        "keys.rotate": "admin",
        "keys.revoke": "admin",
    }
)


def budget_org(principal: Principal, scope: str, key: str, org: str | None) -> str | None:
    """The org whose `scope` account `key` the caller may read (users and turns are their org's own), or a 403.
    An admin reads any (naming the org with `?org=`, else its own); any other key reads its own org, key, user and
    turns (a key that may name end users: its org's users)."""
    if principal.has_scope("admin"):
        return org if org is not None else principal.org
    if org is not None and org != principal.org:
        raise _not_yours(f"org `{org}`")
    if scope == "org" and key == principal.org:
        return principal.org
    if scope == "key" and key == principal.key_id:
        return principal.org
    if scope == "user" and (key == principal.user or principal.may_set_user):
        return principal.org
    if scope == "turn":
        return principal.org
    raise _not_yours(f"the {scope} budget of `{key}`")


def _not_yours(what: str) -> GatewayError:
    return forbidden("admin_required", f"reading {what} needs a key with the `admin` scope (a key reads its own "
                     "org's, user's, turns' and key's budgets)")  # fmt: skip
