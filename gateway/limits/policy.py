"""The rate-limits policy (`policies/limits.yaml`, and a key's own `limits`): which buckets a call draws from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from gateway.limits.bucket import MILLI, BucketSpec
from gateway.policy_files import load_policy_file
from gateway.schema.chat import GatewayMetadata
from gateway.schema.limits import LimitSpec

Scope = Literal["key", "org", "user"]
Quantity = Literal["requests", "tokens", "input", "output", "concurrent"]
CALLERS_CACHE = 4096  # callers whose buckets are kept (bounded: a flood of new users clears it)


def quantities(spec: LimitSpec) -> list[tuple[Quantity, BucketSpec]]:
    """The buckets one limit spec makes: a minute's worth of each per-minute limit, and a pool of slots."""
    out: list[tuple[Quantity, BucketSpec]] = []
    for quantity, per_minute in (("requests", spec.rpm), ("tokens", spec.tpm), ("input", spec.input_tpm),
                                 ("output", spec.output_tpm)):  # fmt: skip
        if per_minute is not None:
            out.append((quantity, BucketSpec(per_minute * MILLI, per_minute * MILLI)))  # type: ignore[arg-type]
    if spec.concurrent is not None:
        out.append(("concurrent", BucketSpec(spec.concurrent * MILLI, 0)))
    return out


class LimitRule(LimitSpec):
    scope: Scope
    key: str | None = None  # one key id / org / user; None: every one of them separately
    org: str | None = None  # only the keys or users of this org


class LimitsPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    limits: dict[str, LimitRule] = {}


@dataclass(frozen=True, slots=True)
class BucketRef:
    """One bucket a call draws from: its id (the same on every replica and cluster), what it counts, its size."""

    id: str
    quantity: Quantity
    spec: BucketSpec
    scope: Scope
    owner: str  # the key id, org or user it limits
    limit: str  # the rule's name (`key-record` for a key's own limits)

    @property
    def label(self) -> str:
        return f"{self.scope} `{self.owner}` (limit `{self.limit}`)"


def _refs(scope: Scope, owner: str, limit: str, spec: LimitSpec) -> list[BucketRef]:
    return [BucketRef(f"{scope}:{owner}:{limit}:{q}", q, s, scope, owner, limit) for q, s in quantities(spec)]


def buckets_for(policy: LimitsPolicy, meta: GatewayMetadata) -> tuple[BucketRef, ...]:
    """Every bucket a call with this (bound) metadata must fit: the policy's rules for its key, org and user, and
    the limits on its key's own record. A user's buckets are its org's own (two orgs' `alice` never share one)."""
    principal = meta.principal
    key_id = principal.key_id if principal is not None and not principal.is_open else None
    user = f"{meta.org}/{meta.user}" if meta.user is not None and meta.org is not None else meta.user
    values: Mapping[Scope, str | None] = {"key": key_id, "org": meta.org, "user": user}
    out: list[BucketRef] = []
    for name, rule in policy.limits.items():
        value = values[rule.scope]
        if value is None or (rule.key is not None and rule.key not in (value, meta.user)):
            continue
        if rule.org is not None and rule.org != meta.org:
            continue
        out.extend(_refs(rule.scope, value, name, rule))
    own = principal.limits if principal is not None else None
    if own is not None and key_id is not None:
        out.extend(_refs("key", key_id, "key-record", own))
    return tuple(out)


class CallerBuckets:
    """`buckets_for`, cached per caller (bounded)."""

    def __init__(self, policy: LimitsPolicy) -> None:
        self.policy = policy
        self._cache: dict[tuple[object, ...], tuple[BucketRef, ...]] = {}

    def __call__(self, meta: GatewayMetadata) -> tuple[BucketRef, ...]:
        principal = meta.principal
        key = (meta.org, meta.user, principal.key_id if principal else None, principal.limits if principal else None)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= CALLERS_CACHE:
                self._cache.clear()
            found = self._cache[key] = buckets_for(self.policy, meta)
        return found


def load_limits(path: str | Path) -> LimitsPolicy:
    return load_policy_file(path, LimitsPolicy.model_validate)[0]
