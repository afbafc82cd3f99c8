"""Bringing up Ray and Serve with the settings the hot path depends on (DESIGN §1), and deploying the app."""

from __future__ import annotations

import os
from typing import Any

# Read by Ray Serve at import time and by every Ray process it starts: set before importing ray.
RAY_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}


def apply_ray_env() -> None:
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)


def start_ray(num_cpus: int | None = None) -> None:
    """A local single-node Ray owned by this process (dashboard off); stopped by `stop_ray`. With RAY_ADDRESS
    set (e.g. `auto` on a cluster's head node), connect to that cluster instead: `stop_ray` then only
    disconnects, and the Serve app keeps running there."""
    apply_ray_env()
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], namespace="llm_gateway", logging_level="WARNING",
                 log_to_driver=False)  # fmt: skip
        return
    ray.init(
        num_cpus=num_cpus if num_cpus is not None else os.cpu_count(),
        include_dashboard=False,
        namespace="llm_gateway",
        logging_level="WARNING",
        log_to_driver=False,
    )


def deploy(config: Any) -> str:
    """Deploy the gateway app for a resolved config; returns its base URL once it answers."""
    from ray import serve

    from serve_app import APP_NAME, build_app

    serve.start(http_options={"host": config.server.host, "port": config.server.port})
    serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{config.server.host}:{config.server.port}"


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
