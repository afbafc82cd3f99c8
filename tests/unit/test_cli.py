"""The `llm-gateway` command's paths that start nothing: bad configuration, stopping what is not running, and
what `up` asks of Ray and HAProxy (loopback only, token authentication on), checked without starting them."""

import os
import re
import subprocess
import sys
import types
from pathlib import Path

from launcher import runtime
from launcher.cli import main


def test_bad_config_exits_2_naming_file_and_field(tmp_path, capsys):
    bad = tmp_path / "gw.yaml"
    bad.write_text("providers: {openai: {kind: openai}}\nmodels: {m: {provider: nope, upstream: x}}\n")
    assert main(["up", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "models.m.provider" in err


def test_down_and_status_when_nothing_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLM_GATEWAY_STATE_DIR", str(tmp_path))
    assert main(["down"]) == 0
    assert "no gateway is running" in capsys.readouterr().out
    assert main(["status"]) == 0
    assert "not running" in capsys.readouterr().out


def test_every_top_level_package_is_installed_by_pyproject():
    """The console script and Ray workers import from the installed project, not the working directory."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    include = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [p.parent.name for p in root.glob("*/__init__.py") if p.parent.name not in {"tests", "bench"}]
    assert packages and all(any(fnmatch.fnmatch(p, pattern) for pattern in include) for p in packages), packages


def test_a_local_start_asks_ray_for_loopback_only_and_token_auth(tmp_path, monkeypatch):
    import ray
    from ray._common.utils import load_class
    from ray._private import ray_constants

    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if not k.startswith("RAY_")})
    monkeypatch.setenv("LLM_GATEWAY_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "auth_token"))
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)  # Linux's default
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    calls: list[dict] = []
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    runtime.start_ray(num_cpus=1)
    (kw,) = calls
    assert kw["_node_ip_address"] == "127.0.0.1" and kw["include_dashboard"] is False
    # Without this, ray.init swaps 127.0.0.1 for the machine's routable address (services.resolve_ip_for_localhost).
    assert ray_constants.ENABLE_RAY_CLUSTER is False and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert kw["runtime_env"] == {"worker_process_setup_hook": runtime.WORKER_SETUP_HOOK}
    assert load_class(runtime.WORKER_SETUP_HOOK) is runtime.bind_worker_grpc_to_loopback  # how workers load it


def test_worker_hook_binds_the_replicas_wildcard_grpc_server_to_loopback(monkeypatch):
    from importlib.util import find_spec

    from ray._common import tls_utils

    # The one server it is for: Serve's replica binds "[::]:0" through this function, imported by name.
    source = Path(find_spec("ray.serve._private.replica").origin).read_text()
    assert "from ray._common.tls_utils import add_port_to_grpc_server" in source
    assert 'add_port_to_grpc_server(self._server, "[::]:0")' in source

    seen: list[str] = []
    monkeypatch.setattr(tls_utils, "add_port_to_grpc_server", lambda server, address: seen.append(address) or 4242)
    replica = types.SimpleNamespace(add_port_to_grpc_server=tls_utils.add_port_to_grpc_server)
    monkeypatch.setitem(sys.modules, "ray.serve._private.replica", replica)  # as if imported before the hook
    runtime.bind_worker_grpc_to_loopback()
    runtime.bind_worker_grpc_to_loopback()  # idempotent
    assert replica.add_port_to_grpc_server is tls_utils.add_port_to_grpc_server
    assert [tls_utils.add_port_to_grpc_server(None, a) for a in ("[::]:0", "0.0.0.0:7", "10.0.0.5:0")] == [4242] * 3
    assert seen == ["127.0.0.1:0", "127.0.0.1:7", "10.0.0.5:0"]


def test_haproxy_wrapper_moves_stats_and_metrics_of_serves_config_to_loopback(tmp_path, monkeypatch):
    from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE

    real = tmp_path / "real-haproxy"  # records the config it is started with
    real.write_text('#!/bin/sh\nwhile [ "$1" != -f ]; do shift; done\ncp "$2" "$0.cfg"\n')
    real.chmod(0o700)
    monkeypatch.setenv("LLM_GATEWAY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv(runtime.HAPROXY_BINARY_ENV, str(real))
    wrapper = runtime.install_haproxy_wrapper()
    assert wrapper is not None and os.stat(wrapper).st_mode & 0o777 == 0o700

    # Serve's own template, rendered roughly: statements dropped, its values filled in (the gateway's frontend on
    # every interface, as on a cluster, to show the wrapper leaves it as configured).
    values = {"stats_port": "8404", "metrics_port": "9101", "frontend_host": "*", "frontend_port": "8000"}
    lines = [line for line in HAPROXY_CONFIG_TEMPLATE.splitlines() if not re.fullmatch(r"\s*\{%.*%\}\s*", line)]
    text = re.sub(r"\{\{\s*config\.(\w+)\s*\}\}", lambda m: values.get(m[1], "x"), "\n".join(lines) + "\n")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(re.sub(r"\{\{.*?\}\}|\{%.*?%\}", "x", text))
    subprocess.run([wrapper, "-db", "-f", str(cfg), "-sf", "1"], check=True, timeout=10)

    started = (tmp_path / "real-haproxy.cfg").read_text()
    assert started == cfg.read_text()
    binds, section = {}, ""
    for line in started.splitlines():
        if line[:1] not in ("", " ", "\t", "#"):
            section = line.strip()
        elif line.split()[:1] == ["bind"]:
            binds[section] = line.split()[1]
    assert binds["listen stats"] == "127.0.0.1:8404" and binds["frontend prometheus"] == "127.0.0.1:9101"
    assert binds["frontend http_frontend"] == "*:8000"
    assert re.search(r"stats socket x mode 600 level admin", started)
