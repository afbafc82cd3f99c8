"""The rate-limit status endpoint (`GET /v1/gateway/limits/{scope}/{key}`): each bucket's size, level, refill,
what replicas hold leased, and debt. A caller reads its own key, org and user; `admin` reads any."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from gateway.auth.access import budget_org
from gateway.http_json import json_response
from gateway.limits.bucket import MILLI
from gateway.limits.policy import BucketRef, LimitsPolicy, buckets_for
from gateway.schema import ErrorKind, GatewayError, GatewayMetadata, validation_error
from gateway.schema.limits import LimitSpec
from gateway.schema.principal import Principal

SCOPES = ("key", "org", "user")
Authorize = Callable[[Request, str], Awaitable[Principal]]
Status = Callable[[BucketRef], Awaitable[dict[str, int]]]
RecordLimits = Callable[[str], Awaitable[LimitSpec | None]]


class LimitsApi:
    def __init__(self, policy: Callable[[], LimitsPolicy | None], status: Status | None, authorize: Authorize,
                 record_limits: RecordLimits) -> None:  # fmt: skip
        self._policy, self._status, self._authorize, self._record_limits = policy, status, authorize, record_limits

    async def get(self, http: Request) -> Response:
        principal = await self._authorize(http, "limits")
        scope, key = http.path_params["scope"], http.path_params["key"]
        policy = self._policy()  # the policy in force (rules set at run time included)
        if policy is None or self._status is None:
            raise GatewayError(ErrorKind.NOT_FOUND, "rate limits are off in this gateway (no limits policy, no keys)")
        if scope not in SCOPES:
            raise validation_error("scope", f"one of {', '.join(SCOPES)}")
        org = budget_org(principal, scope, key, http.query_params.get("org"))
        refs = [r for r in buckets_for(policy, await self._meta(principal, scope, key, org)) if r.scope == scope]
        if not refs:
            raise GatewayError(ErrorKind.NOT_FOUND, f"no rate limit applies to {scope} `{key}`")
        return json_response({"limits": [self._row(r, await self._status(r)) for r in refs]})

    async def _meta(self, principal: Principal, scope: str, key: str, org: str | None) -> GatewayMetadata:
        if scope == "key":
            own = principal.limits if key == principal.key_id else await self._record_limits(key)
            return GatewayMetadata(principal=Principal(key_id=key, via="key", org=org, limits=own))
        return GatewayMetadata(org=org if scope == "user" else key, user=key if scope == "user" else None)

    @staticmethod
    def _row(ref: BucketRef, status: dict[str, int]) -> dict[str, Any]:
        """Milli-units shown as requests or tokens (slots for `concurrent`)."""
        units = {k: v // MILLI for k, v in status.items() if k != "full_in_ms"}
        return {"limit": ref.limit, "scope": ref.scope, "key": ref.owner, "quantity": ref.quantity, **units,
                "full_in_ms": status["full_in_ms"]}  # fmt: skip
