"""The key admin endpoints (`/v1/gateway/keys...`): create, list, show, rotate and revoke gateway keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from gateway.auth.admin import KeyAdmin
from gateway.http_json import json_response, read_json
from gateway.schema import ErrorKind, GatewayError, validation_error
from gateway.schema.principal import Principal

DEFAULT_GRACE_S = 3600.0  # a rotation without `grace_s`: the old secret keeps working for an hour
Authorize = Callable[[Request, str], Awaitable[Principal]]
NO_STORE = {"cache-control": "no-store"}  # a response that shows a secret is never cached


async def _object(request: Request, required: bool) -> dict[str, Any]:
    """The body as a JSON object; with `required` False an empty body is `{}`."""
    if not required and not (await request.body()).strip():
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise validation_error("body", "the request body must be a JSON object")
    return body


def _grace(body: dict[str, Any]) -> float:
    grace = body.get("grace_s", DEFAULT_GRACE_S)
    if isinstance(grace, bool) or not isinstance(grace, int | float):
        raise validation_error("grace_s", "a number of seconds")
    extra = set(body) - {"grace_s"}
    if extra:
        raise validation_error(sorted(extra)[0], "unknown field (a rotation takes only `grace_s`)")
    return float(grace)


class KeysApi:
    """The handlers over a KeyAdmin; `authorize(request, route)` proves an admin caller first."""

    def __init__(self, admin: KeyAdmin | None, authorize: Authorize) -> None:
        self._admin = admin
        self._authorize = authorize

    def _keys(self) -> KeyAdmin:
        if self._admin is None:
            raise GatewayError(ErrorKind.NOT_FOUND, "this gateway runs in open mode (auth.mode): it issues no keys",
                               code="keys_disabled")  # fmt: skip
        return self._admin

    async def create(self, http: Request) -> Response:
        await self._authorize(http, "keys.create")
        created = await self._keys().create(await _object(http, required=True))
        return json_response(created, status=201, headers=NO_STORE)

    async def list(self, http: Request) -> Response:
        await self._authorize(http, "keys.list")
        return json_response({"object": "list", "data": await self._keys().list()})

    async def get(self, http: Request) -> Response:
        await self._authorize(http, "keys.get")
        return json_response(await self._keys().get(http.path_params["key_id"]))

    async def rotate(self, http: Request) -> Response:
        await self._authorize(http, "keys.rotate")
        grace = _grace(await _object(http, required=False))
        idempotency = http.headers.get("idempotency-key")
        rotated = await self._keys().rotate(http.path_params["key_id"], grace, idempotency)
        return json_response(rotated, headers=NO_STORE)

    async def revoke(self, http: Request) -> Response:
        await self._authorize(http, "keys.revoke")
        return json_response(await self._keys().revoke(http.path_params["key_id"]))

    def mount(self, api: FastAPI) -> None:
        api.add_api_route("/v1/gateway/keys", self.create, methods=["POST"])
        api.add_api_route("/v1/gateway/keys", self.list, methods=["GET"])
        api.add_api_route("/v1/gateway/keys/{key_id}", self.get, methods=["GET"])
        api.add_api_route("/v1/gateway/keys/{key_id}/rotate", self.rotate, methods=["POST"])
        api.add_api_route("/v1/gateway/keys/{key_id}", self.revoke, methods=["DELETE"])
