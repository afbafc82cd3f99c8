"""The admin API the platform's budget system feeds: rules set at run time (`PUT` / `DELETE` / `GET` of
`/v1/gateway/limits/{name}` and `/v1/gateway/budgets/{name}`, validated like the files, effective on every replica
within a sync interval) and the settled-spend export (`GET /v1/gateway/budgets/spend`, JSON lines, paged)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from gateway.budgets.policy import Account, BudgetPolicy, usd_text
from gateway.budgets.store import TotalRow
from gateway.http_json import json_response, read_json
from gateway.json_codec import dumps
from gateway.runtime_rules import NAME, Body, Overlay
from gateway.schema import ErrorKind, GatewayError, validation_error
from gateway.schema.principal import Principal
from gateway.wire.openai_in import pydantic_error

Authorize = Callable[[Request, str], Awaitable[Principal]]
PAGE, MAX_PAGE = 100, 1000  # spend rows per page: the default and the most one page may ask for


class RulesAdmin(Protocol):
    """What the admin API asks of the control plane (the Ray link implements it)."""

    async def put_rule(self, kind: str, name: str, body: Body | None) -> int:
        """Store one rule (None: switched off) with its owner and install it on this replica; the new version."""
        ...

    async def budget_spend(self, prefix: str, after: str | None, limit: int) -> tuple[list[TotalRow], str | None]: ...


class RulesApi:
    def __init__(self, overlays: Mapping[str, Overlay[Any]], admin: RulesAdmin | None, authorize: Authorize,
                 budgets: Callable[[], BudgetPolicy | None]) -> None:  # fmt: skip
        self._overlays, self._admin, self._authorize, self._budgets = overlays, admin, authorize, budgets

    def mount(self, api: FastAPI) -> None:
        for kind in ("limits", "budgets"):
            api.add_api_route(f"/v1/gateway/{kind}", _of(self.listing, kind), methods=["GET"])
            api.add_api_route(f"/v1/gateway/{kind}/{{name}}", _of(self.put, kind), methods=["PUT"])
            api.add_api_route(f"/v1/gateway/{kind}/{{name}}", _of(self.delete, kind), methods=["DELETE"])
        api.add_api_route("/v1/gateway/budgets/spend", self.spend, methods=["GET"])

    async def _open(self, http: Request, kind: str) -> tuple[Overlay[Any], RulesAdmin]:
        await self._authorize(http, "rules")
        overlay = self._overlays.get(kind)
        if overlay is None or self._admin is None:
            what = "rate limits" if kind == "limits" else "budgets"
            raise GatewayError(ErrorKind.NOT_FOUND, f"{what} are off in this gateway, or it runs without a control "
                               "plane: there are no rules to set")  # fmt: skip
        return overlay, self._admin

    async def listing(self, http: Request, kind: str) -> Response:
        overlay, _ = await self._open(http, kind)
        rules = overlay.in_force()
        rows = [{"name": n, "source": overlay.source(n), "rule": _dump(rules[n]) if n in rules else None}
                for n in overlay.names()]  # fmt: skip
        return json_response({kind: rows, "version": overlay.version})

    async def put(self, http: Request, kind: str) -> Response:
        overlay, admin = await self._open(http, kind)
        name = _name(http)
        body = await read_json(http)
        if not isinstance(body, dict):
            raise validation_error("body", "the request body must be a JSON object (the rule, as in the file)")
        try:
            rule = overlay.validate(body)
        except ValidationError as exc:
            raise pydantic_error(exc) from None
        stored = _dump(rule)
        version = await admin.put_rule(kind, name, stored)
        return json_response({"name": name, "source": "api", "rule": stored, "version": version})

    async def delete(self, http: Request, kind: str) -> Response:
        """The rule of that name stops applying, the file's too (PUT it again to bring one back)."""
        overlay, admin = await self._open(http, kind)
        name = _name(http)
        if overlay.source(name) in ("none", "off"):
            raise GatewayError(ErrorKind.NOT_FOUND, f"no {kind} rule named `{name}` is in force")
        version = await admin.put_rule(kind, name, None)
        return json_response({"name": name, "source": "off", "rule": None, "version": version})

    async def spend(self, http: Request) -> Response:
        """Settled spend per account (`budget|key|window`), one JSON object per line. `budget`, `key` and `window`
        narrow it; a page holds at most `limit` rows (it may hold fewer when `key` or `window` filter some out), and
        `x-gateway-next` (also a `Link: rel="next"`) is the `after` of the next page, absent on the last."""
        _, admin = await self._open(http, "budgets")
        q = http.query_params
        limit = _page_size(q.get("limit"))
        budget = q.get("budget")
        rows, after = await admin.budget_spend(f"{budget}|" if budget else "", q.get("after"), limit)
        policy = self._budgets()
        lines = [_spend_row(row, policy) for row in rows]
        lines = [r for r in lines if q.get("key") in (None, r["key"]) and q.get("window") in (None, r["window"])]
        headers = {}
        if after is not None:
            headers = {"x-gateway-next": after, "link": f'<{http.url.include_query_params(after=after)}>; rel="next"'}
        content = b"".join(dumps(line) + b"\n" for line in lines)
        return Response(content, headers=headers, media_type="application/x-ndjson")


def _of(handler: Callable[[Request, str], Awaitable[Response]], kind: str) -> Callable[[Request], Awaitable[Response]]:
    """A route's endpoint for one kind (FastAPI would read a bound keyword argument as a query parameter)."""

    async def endpoint(http: Request) -> Response:
        return await handler(http, kind)

    return endpoint


def _name(http: Request) -> str:
    name = str(http.path_params["name"])
    if not NAME.fullmatch(name):
        raise validation_error("name", "1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit")
    return name


def _dump(rule: BaseModel) -> Body:
    """A rule as stored and shown: JSON types, only what was set."""
    return rule.model_dump(mode="json", exclude_defaults=True)


def _page_size(raw: str | None) -> int:
    if raw is None:
        return PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise validation_error("limit", f"a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def _spend_row(row: TotalRow, policy: BudgetPolicy | None) -> dict[str, Any]:
    account, picos, tokens = row
    budget, key, window = Account.parts(account)
    rule = policy.budgets.get(budget) if policy is not None else None
    limit_usd = usd_text(rule.limit_picos) if rule is not None and rule.limit_picos is not None else None
    return {"account": account, "budget": budget, "key": key, "window": window, "spent_usd": usd_text(picos),
            "spent_tokens": tokens, "limit_usd": limit_usd,
            "limit_tokens": rule.limit_tokens if rule is not None else None}  # fmt: skip
