"""The HTTP surface of one replica (FastAPI, no Ray): OpenAI-compatible endpoints and the native streaming API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.types import ASGIApp

from gateway.auth.access import ROUTE_SCOPES, budget_org
from gateway.auth.admin import KeyAdmin
from gateway.auth.authenticator import Authenticator
from gateway.auth.identity import bind
from gateway.budgets.policy import accounts_for, usd_text
from gateway.config import CorsConfig, GatewayConfig
from gateway.control.status import provider_status
from gateway.http_json import json_response, read_json
from gateway.http_keys import KeysApi
from gateway.http_limits import LimitsApi
from gateway.http_redact import RedactApi
from gateway.http_rules import RulesAdmin, RulesApi
from gateway.ingress import Handler, Ingress
from gateway.limits.headers import rate_headers
from gateway.limits.policy import BucketRef
from gateway.pipeline import Pipeline
from gateway.runtime_rules import Overlay
from gateway.schema import (
    ChatRequest,
    ChatResponse,
    EmbeddingsResponse,
    ErrorEvent,
    ErrorKind,
    GatewayError,
    GatewayMetadata,
    StartEvent,
    StreamEvent,
    validation_error,
)
from gateway.schema.limits import LimitSpec
from gateway.schema.principal import Principal
from gateway.streaming import batches_with_heartbeats
from gateway.tokens import TokenEstimator, token_margins
from gateway.wire import anthropic_in, anthropic_out, native, openai_in, openai_out

log = logging.getLogger("gateway.http")
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
CHALLENGE = {"www-authenticate": 'Bearer realm="llm-gateway"'}  # on every 401 (RFC 6750)
EXPOSED = ("x-gateway-provider", "x-gateway-model", "x-gateway-route", "x-gateway-cost-usd", "x-gateway-budget",
           "x-gateway-safety", "x-gateway-attempts", "x-gateway-latency-ms", "retry-after",
           "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
           "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")  # fmt: skip


def error_response(exc: GatewayError, *, anthropic: bool = False) -> Response:
    """The error in the OpenAI format (default) or the Anthropic one (for `/v1/messages`)."""
    headers = dict(CHALLENGE) if exc.kind is ErrorKind.UNAUTHENTICATED else {}
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after)))
    if exc.provider:
        headers["x-gateway-provider"] = exc.provider
    headers.update(rate_headers(getattr(exc, "rate", None), anthropic))
    if anthropic:
        return json_response(anthropic_out.error_body(exc), anthropic_out.error_status(exc), headers)
    return json_response(openai_out.error_body(exc), exc.status_code, headers)


def _route_headers(replica: str, answer: ChatResponse | EmbeddingsResponse | StartEvent, *,
                   anthropic: bool) -> dict[str, str]:  # fmt: skip
    """The `x-gateway-*` and rate-limit headers every answer carries, streamed (from its start event) or not, on
    every API."""
    attempts = answer.attempt if isinstance(answer, StartEvent) else answer.attempts
    headers = {"x-gateway-provider": answer.provider, "x-gateway-model": answer.upstream_model,
               "x-gateway-attempts": str(attempts), "x-gateway-replica": replica,
               **rate_headers(answer.rate, anthropic)}  # fmt: skip
    if answer.route:
        headers["x-gateway-route"] = answer.route
    budget = getattr(answer, "budget", None)  # embeddings have no budget decision
    if budget is not None:
        headers["x-gateway-budget"] = budget
    if answer.safety is not None:
        headers["x-gateway-safety"] = answer.safety
    return headers


def _answer_headers(replica: str, response: ChatResponse | EmbeddingsResponse,
                    anthropic: bool = False) -> dict[str, str]:  # fmt: skip
    """A complete answer's headers (chat or embeddings): the route's, its latency and its cost."""
    headers = _route_headers(replica, response, anthropic=anthropic)
    headers["x-gateway-latency-ms"] = f"{response.latency_ms:.1f}"
    if response.cost_usd is not None:
        headers["x-gateway-cost-usd"] = str(response.cost_usd)
    return headers


async def _close(head: asyncio.Future[StreamEvent], events: AsyncIterator[StreamEvent]) -> None:
    head.cancel()
    with contextlib.suppress(BaseException):
        await head
    await events.aclose()  # type: ignore[attr-defined]


async def _after(head: asyncio.Future[StreamEvent], events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
    """The stream once its pending first event arrives; a failure to start becomes an error event."""
    try:
        try:
            first = await head
        except StopAsyncIteration:
            error = GatewayError(ErrorKind.INVALID_RESPONSE, "the upstream stream ended before it started")
            yield ErrorEvent(error=error.to_info())
            return
        except GatewayError as exc:
            yield ErrorEvent(error=exc.to_info(), usage=exc.usage)
            return
        except Exception as exc:
            log.exception("stream failed before its first event")
            yield ErrorEvent(error=GatewayError(ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}").to_info())
            return
        yield first
        async for event in events:
            yield event
    finally:
        await _close(head, events)


class ControlAdmin(RulesAdmin, Protocol):
    """The control-plane operations an admin endpoint may trigger (the Ray link implements it)."""

    async def reload_policy(self) -> tuple[bool, str]: ...

    async def router_status(self) -> dict[str, object]: ...

    async def budget_status(self, account: str) -> dict[str, int | None]: ...

    async def limit_status(self, ref: BucketRef) -> dict[str, int]: ...


class HttpApi:
    """Request handlers over one Pipeline; `app()` builds the FastAPI application that serves them."""

    def __init__(self, config: GatewayConfig, pipeline: Pipeline, auth: Authenticator,
                 admin: ControlAdmin | None = None, tokens: TokenEstimator | None = None,
                 keys: KeyAdmin | None = None, rules: Mapping[str, Overlay[Any]] | None = None) -> None:  # fmt: skip
        self._config = config
        self._pipeline = pipeline
        self._auth = auth
        self._admin = admin
        self._keys = KeysApi(keys, self._caller)
        self._key_admin = keys
        rate = pipeline.limits
        self._limits = LimitsApi(lambda: rate.policy if rate is not None else None,
                                 admin.limit_status if admin is not None and rate is not None else None,
                                 self._caller, self._record_limits)  # fmt: skip
        spending = pipeline.spending
        self._rules = RulesApi(rules or {}, admin, self._caller, lambda: spending.policy if spending else None)
        self._heartbeat = config.server.heartbeat_interval_s
        self._tokens = tokens or TokenEstimator(token_margins(config))

    async def _caller(self, http: Request, route: str) -> Principal:
        """The authenticated caller of `route` (401 / 403 before anything else is read); kept on the request so
        a later refusal (a model the key may not use) is audited with it."""
        principal = await self._auth.authenticate(http.headers, route, ROUTE_SCOPES[route])
        http.state.caller = (principal, route)
        return principal

    def _audit_refusal(self, http: Request, exc: GatewayError) -> None:
        caller = getattr(http.state, "caller", None)
        if exc.kind is ErrorKind.FORBIDDEN and caller is not None:
            self._auth.audit.deny(caller[1], exc, caller[0])

    async def _stream(self, request: ChatRequest, encode: Callable[[StreamEvent], bytes],
                      anthropic: bool = False) -> Response:  # fmt: skip
        """Wait briefly for the first event: an error before it is an HTTP error. If the first token is slow (the
        route may still be retrying or hedging), answer 200 at once and send heartbeats meanwhile; a failure
        then arrives as an error event, still before any content."""
        events = self._pipeline.stream(request)
        head = asyncio.ensure_future(anext(events))
        try:
            await asyncio.wait((head,), timeout=self._heartbeat)
        except BaseException:
            await _close(head, events)
            raise
        if head.done():
            try:
                first = head.result()
            except StopAsyncIteration:
                raise GatewayError(ErrorKind.INVALID_RESPONSE, "the upstream stream ended before it started") from None
            except BaseException:
                await events.aclose()  # type: ignore[attr-defined]
                raise
            source = events
        else:
            first, source = None, _after(head, events)

        async def body() -> AsyncIterator[bytes]:
            async for batch in batches_with_heartbeats(source, self._heartbeat, first):
                chunk = b"".join(encode(event) for event in batch)
                if chunk:
                    yield chunk

        replica = self._pipeline.control.replica_id
        headers = {**SSE_HEADERS, "x-gateway-replica": replica}
        if first is not None and first.type == "start":
            headers.update(_route_headers(replica, first, anthropic=anthropic))
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    async def chat_completions(self, http: Request) -> Response:
        principal = await self._caller(http, "chat.completions")
        request, include_usage = openai_in.parse_chat(await read_json(http), http.headers)
        request = bind(principal, request)
        if request.stream:
            encoder = openai_out.ChunkEncoder(int(time.time()), include_usage)
            return await self._stream(request, encoder.encode)
        response: ChatResponse = await self._pipeline.complete(request)
        headers = _answer_headers(self._pipeline.control.replica_id, response)
        return json_response(openai_out.chat_completion(response), headers=headers)

    async def native_chat(self, http: Request) -> Response:
        principal = await self._caller(http, "gateway.chat")
        body = await read_json(http)
        if not isinstance(body, dict):
            raise validation_error("body", "the request body must be a JSON object")
        meta = body.get("metadata") or {}
        if not isinstance(meta, dict):
            raise validation_error("metadata", "must be an object")
        headers = openai_in.metadata_from({}, http.headers)  # x-gateway-* headers, as on the other APIs
        try:
            request = ChatRequest.model_validate({**body, "stream": True, "metadata": {**meta, **headers}})
        except ValidationError as exc:
            raise openai_in.pydantic_error(exc) from None
        return await self._stream(bind(principal, request), native.encode_event)

    async def messages(self, http: Request) -> Response:
        """The Anthropic Messages API, for any catalog model on any provider; errors in Anthropic's format."""
        try:
            principal = await self._caller(http, "messages")
            request = bind(principal, anthropic_in.parse_messages(await read_json(http), http.headers))
            if request.stream:
                return await self._stream(request, anthropic_out.MessageStreamEncoder().encode, anthropic=True)
            response: ChatResponse = await self._pipeline.complete(request)
        except GatewayError as exc:
            self._audit_refusal(http, exc)
            return error_response(exc, anthropic=True)
        headers = _answer_headers(self._pipeline.control.replica_id, response, anthropic=True)
        return json_response(anthropic_out.message(response), headers=headers)

    async def route(self, http: Request) -> Response:
        """Dry run: the route plan an OpenAI-format chat request would get, and why, with each candidate's prompt
        token estimate; nothing is called."""
        principal = await self._caller(http, "gateway.route")
        request, _ = openai_in.parse_chat(await read_json(http), http.headers)
        request = bind(principal, request)
        plan = self._pipeline.plan(request)
        catalog = self._config.models

        def tokens(model: str) -> int:
            entry = catalog[model]
            return self._tokens.prompt_tokens(request, entry, self._config.providers[entry.provider].kind)

        candidates = [
            {"model": c.model, "provider": catalog[c.model].provider, "upstream": catalog[c.model].upstream,
             "reason": c.reason, "prompt_tokens": tokens(c.model)} for c in plan.candidates
        ]  # fmt: skip
        skipped = [{"model": m, "why": why} for m, why in plan.skipped]
        body = {"task_class": plan.task_class, "route": plan.header, "candidates": candidates, "skipped": skipped}
        return json_response(body, headers={"x-gateway-replica": self._pipeline.control.replica_id})

    async def providers(self, http: Request) -> Response:
        """Breakers, latency statistics, rate-limit use and recent errors of every provider: the shared view (all
        replicas, as of this replica's snapshot) merged with this replica's own breakers; its actor calls."""
        await self._caller(http, "providers")
        body = provider_status(self._config, self._pipeline.control)
        if self._auth.cache is not None:  # key registry lookups made on a request's path (first sight of a key)
            body["key_registry_calls"] = {"request_path": self._auth.cache.lookups}
        return json_response(body)

    async def policy(self, http: Request) -> Response:
        await self._caller(http, "policy")
        control = self._pipeline.control
        body: dict[str, Any] = {"policy_version": control.snapshot.policy_version,
                                "policy_error": control.snapshot.policy_error}  # fmt: skip
        if self._admin is not None:
            body["router"] = await self._admin.router_status()
        policy = control.policy
        body["policy"] = policy.model_dump(mode="json") if policy is not None else None
        return json_response(body)

    async def reload_policy(self, http: Request) -> Response:
        """Re-read the routing policy file; an invalid file is rejected (409) and the policy in force stays."""
        await self._caller(http, "policy.reload")
        if self._admin is None:
            raise GatewayError(ErrorKind.NOT_FOUND, "this gateway runs without a control plane; nothing to reload")
        ok, message = await self._admin.reload_policy()
        return json_response({"reloaded": ok, "message": message}, status=200 if ok else 409)

    async def budgets(self, http: Request) -> Response:
        """`GET /v1/gateway/budgets/{scope}/{key}`: limit, spent, reserved and remaining of each budget of that
        scope that applies to `key` (its current window), from the ledger. A user's or a turn's account is its
        org's: `?org=` names it for an admin; any other caller reads its own (gateway.auth.access)."""
        principal = await self._caller(http, "budgets")
        scope, key = http.path_params["scope"], http.path_params["key"]
        spending = self._pipeline.spending
        if spending is None or self._admin is None:
            raise GatewayError(ErrorKind.NOT_FOUND, "budgets are off in this gateway (no `budgets.policy`)")
        if scope not in BUDGET_FIELDS:
            raise validation_error("scope", f"one of {', '.join(BUDGET_FIELDS)}")
        meta = _budget_meta(scope, key, budget_org(principal, scope, key, http.query_params.get("org")))
        accounts = [a for a in accounts_for(spending.policy, meta) if spending.policy.budgets[a.budget].scope == scope]
        if not accounts:
            raise GatewayError(ErrorKind.NOT_FOUND, f"no budget applies to {scope} `{key}`")
        out = []
        for a in accounts:
            st = await self._admin.budget_status(a.id)
            usd = {k.replace("_picos", "_usd"): (usd_text(v) if v is not None else None)
                   for k, v in st.items() if k.endswith("_picos")}  # fmt: skip
            tokens = {k: v for k, v in st.items() if k.endswith("_tokens")}
            out.append({"budget": a.budget, "scope": scope, "key": a.key, "window": a.window, **usd, **tokens})
        return json_response({"budgets": out})

    async def embeddings(self, http: Request) -> Response:
        principal = await self._caller(http, "embeddings")
        request, encoding = openai_in.parse_embeddings(await read_json(http), http.headers)
        request = bind(principal, request)
        response = await self._pipeline.embed(request)
        headers = _answer_headers(self._pipeline.control.replica_id, response)
        return json_response(openai_out.embeddings(response, encoding), headers=headers)

    async def models(self, http: Request) -> Response:
        """The catalog models this caller's key may use."""
        principal = await self._caller(http, "models")
        data = [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": entry.provider,
                "kind": entry.kind,
                "context_window": entry.context_window,
            }
            for name, entry in self._config.models.items()
            if principal.allows_model(name)
        ]
        return json_response({"object": "list", "data": data})

    async def _record_limits(self, key_id: str) -> LimitSpec | None:
        """A key's own limits, from its record (an admin reading another key's buckets)."""
        if self._key_admin is None:
            return None
        try:
            limits = (await self._key_admin.get(key_id)).get("limits")
        except GatewayError:
            return None
        return LimitSpec.model_validate(limits) if limits else None

    def _error(self, http: Request, exc: GatewayError) -> Response:
        self._audit_refusal(http, exc)
        return error_response(exc)

    def app(self) -> ASGIApp:
        """The hot endpoints straight to their handlers (gateway.ingress), the rest through FastAPI; CORS around
        both when configured."""
        hot: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): self.chat_completions, ("POST", "/v1/messages"): self.messages,
            ("POST", "/v1/embeddings"): self.embeddings, ("POST", "/v1/gateway/chat"): self.native_chat,
        }  # fmt: skip
        entry = Ingress(hot, self._fastapi(), self._error)
        cors = self._config.auth.cors
        return _allow_browsers(entry, cors) if cors is not None else entry

    def _fastapi(self) -> FastAPI:
        api = FastAPI(title="LLM Gateway", docs_url=None, redoc_url=None)

        @api.exception_handler(GatewayError)
        async def _gateway_error(http: Request, exc: GatewayError) -> Response:
            return self._error(http, exc)

        @api.exception_handler(Exception)
        async def _unexpected(_: Request, exc: Exception) -> Response:
            log.exception("unhandled error")
            return error_response(GatewayError(ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}"))

        api.add_api_route("/v1/chat/completions", self.chat_completions, methods=["POST"])
        api.add_api_route("/v1/gateway/chat", self.native_chat, methods=["POST"])
        api.add_api_route("/v1/messages", self.messages, methods=["POST"])
        api.add_api_route("/v1/gateway/route", self.route, methods=["POST"])
        api.add_api_route("/v1/gateway/providers", self.providers, methods=["GET"])
        api.add_api_route("/v1/gateway/policy", self.policy, methods=["GET"])
        api.add_api_route("/v1/gateway/budgets/{scope}/{key}", self.budgets, methods=["GET"])
        api.add_api_route("/v1/gateway/limits/{scope}/{key}", self._limits.get, methods=["GET"])
        api.add_api_route("/v1/gateway/policy/reload", self.reload_policy, methods=["POST"])
        api.add_api_route("/v1/embeddings", self.embeddings, methods=["POST"])
        api.add_api_route("/v1/gateway/redact", RedactApi(self._caller).redact, methods=["POST"])
        api.add_api_route("/v1/models", self.models, methods=["GET"])
        self._keys.mount(api)
        self._rules.mount(api)

        @api.get("/healthz")
        async def healthz() -> JSONResponse:
            return JSONResponse({"status": "ok"})

        @api.get("/readyz")
        async def readyz() -> JSONResponse:
            return JSONResponse(
                {"status": "ready", "offline": self._config.offline is True, "models": len(self._config.models)}
            )

        return api


BUDGET_FIELDS = {"global": None, "daemon": "daemon", "org": "org", "user": "user", "turn": "turn_id", "key": None}


def _budget_meta(scope: str, key: str, org: str | None) -> GatewayMetadata:
    """The metadata of a call that would spend from `scope` account `key` (of `org`, for users and turns)."""
    fields: dict[str, Any] = {"org": org} if scope in ("user", "turn") else {}
    if scope == "key":
        fields["principal"] = Principal(key_id=key, via="key")
    elif (field := BUDGET_FIELDS[scope]) is not None:
        fields[field] = key
    try:
        return GatewayMetadata.model_validate(fields)
    except ValidationError as exc:
        raise openai_in.pydantic_error(exc) from None


def _allow_browsers(app: ASGIApp, cors: CorsConfig) -> ASGIApp:
    """CORS for the named origins only (no cookies: a browser client sends its key in `Authorization`)."""
    return CORSMiddleware(app, allow_origins=list(cors.origins), allow_methods=list(cors.methods),
                          allow_headers=list(cors.headers), allow_credentials=False, expose_headers=list(EXPOSED),
                          max_age=cors.max_age_s)  # fmt: skip
