"""cluster.yaml is a valid Ray cluster-launcher config and starts every node with the hot path's Ray settings."""

from __future__ import annotations

from pathlib import Path

import yaml

from launcher.runtime import RAY_ENV


def test_cluster_yaml_passes_rays_schema_and_sets_the_serve_env_on_every_node():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((Path(__file__).parents[2] / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # raises on a schema error (defaults filled in first)
    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[commands] if "ray start" in c)
        for key in ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_ENABLE_HA_PROXY"):
            assert f"{key}={RAY_ENV[key]}" in start, (commands, key)
    assert config["file_mounts"]["~/llm-gateway"] == "."
