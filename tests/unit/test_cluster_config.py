"""cluster.yaml is a valid Ray cluster-launcher config, starts every node with the hot path's Ray settings and
Ray's token authentication, and opens only the gateway's port to callers (Ray's ports between the nodes only)."""

from __future__ import annotations

from pathlib import Path

import yaml

from launcher.runtime import RAY_ENV

NODE_COMMANDS = ("head_start_ray_commands", "worker_start_ray_commands")


def _config() -> dict:
    return yaml.safe_load((Path(__file__).parents[2] / "cluster.yaml").read_text())


def _start(config: dict, commands: str) -> str:
    return next(c for c in config[commands] if "ray start" in c)


def test_cluster_yaml_passes_rays_schema_and_sets_the_serve_env_on_every_node():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _config()
    validate_config(prepare_config(config))  # raises on a schema error (defaults filled in first)
    for commands in NODE_COMMANDS:
        start = _start(config, commands)
        for key in ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_ENABLE_HA_PROXY"):
            assert f"{key}={RAY_ENV[key]}" in start, (commands, key)
    assert config["file_mounts"]["~/llm-gateway"] == "."


def test_every_node_keeps_token_auth_on_and_haproxy_stats_and_metrics_on_loopback():
    config = _config()
    # The operator's token reaches every node (file_mounts go to the head, then from the head to the workers).
    assert config["file_mounts"]["~/.ray/auth_token"].startswith("~/.ray/")
    for commands in NODE_COMMANDS:
        start = _start(config, commands)
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_MODE=disabled" not in start, commands
        assert "chmod 600 ~/.ray/auth_token" in start, commands
        # Serve runs HAProxy through the wrapper that binds its stats page and exporter to 127.0.0.1
        assert "HAPROXY=$(~/venv/bin/python -m launcher.runtime haproxy-wrapper) || exit 1" in start, commands
        assert "RAY_SERVE_HAPROXY_BINARY_PATH=$HAPROXY" in start, commands
    assert "--dashboard-host=127.0.0.1" in _start(config, "head_start_ray_commands")


def test_security_group_opens_the_gateway_port_to_callers_only_and_rays_ports_between_nodes_only():
    from ray.autoscaler._private.aws.config import _create_default_inbound_rules

    from gateway.config import load_config

    ours = _config()["provider"]["security_group"]["IpPermissions"]
    port = load_config(None).server.port
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in ours] == [("tcp", port, port)]
    for rule in ours:
        assert not rule.get("UserIdGroupPairs") and not rule.get("Ipv6Ranges")
        assert rule["IpRanges"] and all(r["CidrIp"] != "0.0.0.0/0" for r in rule["IpRanges"])

    # What the launcher writes into the group it creates: its own two rules, then ours.
    rules = _create_default_inbound_rules({"sg-nodes"}, ours)
    anywhere = [
        r
        for r in rules
        if any(x.get("CidrIp") == "0.0.0.0/0" for x in r.get("IpRanges", []))
        or any(x.get("CidrIpv6") == "::/0" for x in r.get("Ipv6Ranges", []))
    ]
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in anywhere] == [("tcp", 22, 22)]  # launcher's SSH
    every_port = [r for r in rules if r["IpProtocol"] == "-1"]
    assert every_port == [
        {"FromPort": -1, "ToPort": -1, "IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-nodes"}]}
    ]  # Ray's and Serve's ports: from the cluster's own nodes (self-referencing group) only
