"""Ray Serve wiring: the Gateway ingress deployment and build_app(config)."""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve import Application

from gateway.config import GatewayConfig
from gateway.http_api import HttpApi
from gateway.pipeline import Pipeline
from gateway.pricing import Pricer
from gateway.providers import ProviderRegistry
from gateway.routing.policy import RoutingPolicy, load_policy

APP_NAME = "llm_gateway"
NAMESPACE = "llm_gateway"


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Gateway:
    """One ingress replica: it holds the client connection and calls providers in-process (DESIGN §1)."""

    def __init__(self, config: GatewayConfig, policy: RoutingPolicy | None) -> None:
        logging.getLogger("gateway").setLevel(logging.INFO)
        self._config = config
        self._pipeline = Pipeline(ProviderRegistry(config), Pricer(), policy)

    def __serve_build_asgi_app__(self) -> Any:
        return HttpApi(self._config, self._pipeline).app()

    async def __del__(self) -> None:
        """Serve calls this on replica shutdown: close the provider connection pools."""
        await self._pipeline.aclose()


def build_app(config: GatewayConfig) -> Application:
    """The Serve application for `config` (already resolved: offline providers point at the emulator)."""
    server = config.server
    # Loaded here, on the driver, so a bad policy fails the deploy with a clear error (replicas have another cwd).
    policy = load_policy(config.routing_policy, config.models) if config.routing_policy else None
    return Gateway.options(
        num_replicas=server.replicas,
        max_ongoing_requests=server.max_ongoing_requests,
        max_queued_requests=server.max_queued_requests,
    ).bind(config, policy)
