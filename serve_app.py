"""Ray Serve wiring: the Gateway ingress deployment and build_app(config)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from ray import serve
from ray.serve import Application

from actors.control_plane import ControlLink, connect
from actors.key_link import KeyLink
from gateway.auth.setup import admin_keys, auth_mode, pepper
from gateway.budgets.policy import BudgetPolicy, load_budgets
from gateway.config import GatewayConfig
from gateway.limits.policy import LimitsPolicy, load_limits
from gateway.policy_files import resolve_policy_path
from gateway.pricing import PriceTable, load_price_table
from gateway.routing.policy import RoutingPolicy, load_policy
from gateway.safety.policy import SafetyPolicy, load_safety

if TYPE_CHECKING:
    from gateway.auth.admin import KeyAdmin
    from gateway.auth.authenticator import Authenticator
    from gateway.budgets.spending import Spending
    from gateway.limits.admission import RateAdmission
    from gateway.runtime_rules import Overlay
    from gateway.secrets.resolver import SecretResolver

APP_NAME = "llm_gateway"
NAMESPACE = "llm_gateway"


def _replica_id() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside Serve (a test constructing the class directly)
        return f"pid-{os.getpid()}"


def _log_to_replica_file() -> None:
    """The gateway's own events (budget decisions, stream continuations) at INFO in this replica's Serve log file.
    Serve's own logger stays at WARNING in throughput mode (and swallows stderr), so the file gets a handler of ours."""
    logger = logging.getLogger("gateway")
    logger.setLevel(logging.INFO)
    if any(getattr(h, "_gateway", False) for h in logger.handlers):
        return
    serve_handlers = [getattr(h, "target", None) or h for h in logging.getLogger("ray.serve").handlers]  # buffered
    files = [h.baseFilename for h in serve_handlers if hasattr(h, "baseFilename")]
    handler = logging.FileHandler(files[0]) if files else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(created).3f %(name)s %(message)s"))  # asctime: slower
    handler._gateway = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Gateway:
    """One ingress replica: it holds the client connection and calls providers in-process (DESIGN §1); the
    control plane reaches it only through a background sync (no actor call per request)."""

    async def __init__(
        self, config: GatewayConfig, policy: RoutingPolicy | None, prices: PriceTable, budgets: BudgetPolicy | None,
        auth_mode: str = "keys", limits: LimitsPolicy | None = None, safety: SafetyPolicy | None = None,
    ) -> None:  # fmt: skip
        # The request path's modules (the providers' SDKs, the tokenizer, the HTTP surface) are imported here, in
        # the replica: the driver that deploys the app never loads them (they were ~150 MB of the CLI's memory).
        from gateway.budgets.gate import BudgetGate, to_picos
        from gateway.budgets.spending import Spending
        from gateway.control.replica import RateLimit, ReplicaControl
        from gateway.limits.admission import RateAdmission
        from gateway.limits.gate import LimitGate
        from gateway.pipeline import Pipeline
        from gateway.pricing import Pricer
        from gateway.providers import ProviderRegistry
        from gateway.safety.screen import Safety
        from gateway.secrets.resolver import SecretResolver
        from gateway.tokens import TokenEstimator, token_margins

        _log_to_replica_file()
        self._config = config
        self._link: ControlLink | None = None  # set before anything can fail: Serve calls __del__ after a failed init
        self._keys: KeyLink | None = None
        self._audit_flush: asyncio.Task[None] | None = None
        resolver = SecretResolver(config.secrets)  # credentials are read here, in the replica (never Ray arguments)
        registry = ProviderRegistry(config, resolver)
        provider_limits = registry.limits()
        control = ReplicaControl(
            _replica_id(), policy, registry.canonical, {p: RateLimit(*lim) for p, lim in provider_limits.items()},
            stale_after_s=config.control.stale_after_s,
        )  # fmt: skip
        self._tokens = TokenEstimator(token_margins(config))  # one per replica: the BPE tables load once
        pricing = config.pricing
        pricer = Pricer(prices, pricing.default if pricing.unknown_model == "default" else None)
        spending = None
        if budgets is not None:
            b = config.budgets
            gate = BudgetGate(to_picos(b.lease_usd), b.lease_tokens)
            spending = Spending(
                budgets, gate, pricer, self._tokens, registry.kind, config.budgets.default_output_tokens
            )
        rate = None
        if (limits is not None and limits.limits) or auth_mode == "keys":  # a key's own limits apply in keys mode
            limit_gate = LimitGate(config.server.replicas, config.limits.on_store_error)
            rate = RateAdmission(limits or LimitsPolicy(), limit_gate, self._tokens, registry.kind,
                                 config.budgets.default_output_tokens)  # fmt: skip
        self._rules = _overlays(config, budgets, spending, limits, rate)
        if config.control.enabled:
            self._link = connect(config, policy, provider_limits, control, spending.gate if spending else None,
                                 rate.gate if rate else None, self._rules)  # fmt: skip
            await self._link.sync_once()  # the first snapshot and leases before the first request
            await self._link.start_ledger()
            self._link.start()
        guards = Safety(safety) if safety is not None and safety.select else None
        self._pipeline = Pipeline(registry, pricer, control=control, spending=spending, tokens=self._tokens,
                                  limits=rate, safety=guards)  # fmt: skip
        self._auth, self._key_admin = await self._authentication(auth_mode, resolver, policy)

    async def _authentication(
        self, mode: str, resolver: SecretResolver, policy: RoutingPolicy | None
    ) -> tuple[Authenticator, KeyAdmin | None]:
        """Open mode: anyone. Keys mode: the pepper and bootstrap admin keys read here, a key cache fed by the
        registry actor's change feed (the first snapshot before the first request), JWTs if configured."""
        from gateway.auth.admin import KeyAdmin
        from gateway.auth.audit import Audit
        from gateway.auth.authenticator import Authenticator
        from gateway.auth.cache import KeyCache
        from gateway.auth.jwt_verifier import JwtVerifier
        from gateway.auth.keys import KeyHasher

        if mode == "open":
            return Authenticator("open", Audit()), None
        auth = self._config.auth
        hasher = KeyHasher(pepper(auth, resolver.resolve))
        self._keys = KeyLink(auth, self._config.control.namespace, self._config.control.interval_s)
        cache = self._keys.cache = KeyCache(self._keys.lookup, auth.cache_hit_s, auth.cache_miss_s)
        await self._keys.ready()
        self._keys.start()
        jwt = JwtVerifier(auth.jwt) if auth.jwt is not None else None
        audit = Audit(buffered=True)  # allow events written in batches (a deny at once)
        self._audit_flush = asyncio.get_running_loop().create_task(audit.run(), name="audit-flush")
        authenticator = Authenticator("keys", audit, hasher, cache, admin_keys(auth, resolver.resolve), jwt)
        tiers = policy.budget_tiers if policy is not None else ()
        return authenticator, KeyAdmin(hasher, self._keys, self._config.models, tiers)

    def __serve_build_asgi_app__(self) -> Any:
        from gateway.http_api import HttpApi

        return HttpApi(self._config, self._pipeline, self._auth, self._link, self._tokens, self._key_admin,
                       self._rules).app()  # fmt: skip

    async def __del__(self) -> None:
        """Serve calls this on replica shutdown: stop the syncs, close the provider connection pools."""
        for link in (self._link, self._keys):
            if link is not None:
                await link.aclose()
        if self._audit_flush is not None:
            self._audit_flush.cancel()
        if "_pipeline" in self.__dict__:  # absent when __init__ failed before it
            await self._pipeline.aclose()


def _overlays(config: GatewayConfig, budgets: BudgetPolicy | None, spending: Spending | None,
              limits: LimitsPolicy | None, rate: RateAdmission | None) -> dict[str, Overlay[Any]]:  # fmt: skip
    """The rules the admin API may set at run time, laid over the files' (only where that feature is on)."""
    from gateway.budgets.policy import budget_rule
    from gateway.limits.policy import LimitRule
    from gateway.runtime_rules import Overlay

    out: dict[str, Overlay[Any]] = {}
    if rate is not None:
        out["limits"] = Overlay("limits", limits.limits if limits else {}, LimitRule.model_validate,
                                lambda rules: rate.adopt(LimitsPolicy(limits=rules)))  # fmt: skip
    if spending is not None and budgets is not None:
        out["budgets"] = Overlay("budgets", budgets.budgets, budget_rule(config.models),
                                 lambda rules: spending.adopt(BudgetPolicy(budgets=rules)))  # fmt: skip
    return out


def build_app(config: GatewayConfig) -> Application:
    """The Serve application for `config` (already resolved: offline providers point at the emulator)."""
    server = config.server
    # Loaded here, on the driver, so a bad policy fails the deploy with a clear error (replicas have another cwd).
    policy = None
    if config.routing_policy:
        policy = load_policy(config.routing_policy, config.models)
        config = config.model_copy(update={"routing_policy": str(resolve_policy_path(config.routing_policy))})
    prices = load_price_table(config.pricing.table) if config.pricing.table else {}
    budgets = load_budgets(config.budgets.policy, config.models) if config.budgets.policy else None
    limits = load_limits(config.limits.policy) if config.limits.policy else None
    safety = load_safety(config.safety.policy) if config.safety.policy else None
    mode = auth_mode(config)  # here, so an unsafe open mode refuses to deploy, saying why
    return Gateway.options(
        num_replicas=server.replicas,
        max_ongoing_requests=server.max_ongoing_requests,
        max_queued_requests=server.max_queued_requests,
        logging_config=_serve_logging(server.access_log),
    ).bind(config, policy, prices, budgets, mode, limits, safety)


def _serve_logging(access_log: bool) -> dict[str, Any]:
    """Serve's replica logger: at WARNING unless the access log is on (an INFO line per request, which Serve builds
    for every request even when its handler then filters it out)."""
    return {"enable_access_log": access_log, "log_level": "INFO" if access_log else "WARNING"}
