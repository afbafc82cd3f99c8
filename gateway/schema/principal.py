"""The principal a request runs as: who the credential proves the caller is, and what it may do."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict

from gateway.schema.limits import LimitSpec

Daemon = Literal["router", "executor", "evaluator", "working_memory"]
Scope = Literal["chat", "embeddings", "admin"]
ALL_SCOPES: tuple[Scope, ...] = ("chat", "embeddings", "admin")


class Principal(BaseModel):
    """Set by authentication only (never parsed from a request). `key_id` is public and stable across rotations:
    budgets, limits and audit hang off it. `via`: a gateway key, a bootstrap admin key, a JWT, or open mode."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str
    via: Literal["key", "admin_key", "jwt", "open"]
    org: str | None = None
    user: str | None = None
    daemons: tuple[Daemon, ...] = ()
    models: tuple[str, ...] = ("*",)
    scopes: tuple[Scope, ...] = ("chat", "embeddings")
    budget_tier: str | None = None
    may_set_user: bool = False
    limits: LimitSpec | None = None  # the key's own rate limits (on top of the limits policy's)
    name: str | None = None

    @property
    def is_open(self) -> bool:
        return self.via == "open"

    def has_scope(self, scope: Scope) -> bool:
        return scope in self.scopes

    def allows_model(self, model: str) -> bool:
        """Whether a catalog model name matches one of the key's globs."""
        return any(pattern == "*" or fnmatchcase(model, pattern) for pattern in self.models)


OPEN = Principal(key_id="open", via="open", daemons=("router", "executor", "evaluator", "working_memory"),
                 scopes=ALL_SCOPES, may_set_user=True)  # fmt: skip
