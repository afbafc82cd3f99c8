"""The `llm-gateway` command: `up` (emulators when offline, Ray, the app), `down`, `status`, `keys`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gateway.auth.setup import ADMIN_KEY_ENV, auth_mode
from gateway.config import ConfigError, GatewayConfig, load_config
from launcher import keys_cli

log = logging.getLogger("llm-gateway")


def _state_file(port: int) -> Path:
    base = Path(os.environ.get("LLM_GATEWAY_STATE_DIR", Path.home() / ".cache" / "llm-gateway"))
    base.mkdir(parents=True, exist_ok=True)
    return base / f"gateway-{port}.json"


def wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def start_emulator(config: GatewayConfig) -> tuple[subprocess.Popen[bytes], str]:
    emu = config.emulator
    url = f"http://{emu.host}:{emu.port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.emulators",
            "--host",
            emu.host,
            "--port",
            str(emu.port),
            "--ttft-ms",
            str(emu.ttft_ms),
            "--inter-token-ms",
            str(emu.inter_token_ms),
        ],
    )
    if not wait_http(f"{url}/health", 30):
        proc.terminate()
        raise SystemExit(f"the emulator did not start on {url} (is the port taken?)")
    return proc, url


def _example(base: str, mode: str) -> str:
    """What `up` prints: who may call (the auth mode) and a copy-paste call."""
    if mode == "open":
        who = ("Open mode (offline, loopback only): any bearer token is accepted and x-gateway-org / -user headers "
               "say who calls. Set auth.mode: keys (or LLM_GATEWAY_AUTH=keys) to require gateway keys.")  # fmt: skip
        token = "any"
    else:
        who = (f"Caller keys are on. Create one (with the admin key the gateway started with):\n"
               f"  export GATEWAY_KEY=$({ADMIN_KEY_ENV}=... llm-gateway keys create --name me --org my-org "
               "| python -c 'import json,sys; print(json.load(sys.stdin)[\"key\"])')")  # fmt: skip
        token = "$GATEWAY_KEY"
    return (
        f"{who}\nTry it:\n"
        f'  curl -s {base}/v1/chat/completions -H "authorization: Bearer {token}" \\\n'
        "    -H 'content-type: application/json' \\\n"
        '    -d \'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}\''
    )


def serve_foreground(config: GatewayConfig, state: Path) -> int:
    """Run emulator (offline), Ray and the app in this process tree until SIGTERM/SIGINT."""
    from launcher import runtime

    emulator: subprocess.Popen[bytes] | None = None
    emulator_url = None
    if config.is_offline:
        emulator, emulator_url = start_emulator(config)
        log.warning(
            "OFFLINE MODE: no provider credentials configured; every provider is served by the local "
            "emulator at %s (no keys, no internet). Set e.g. OPENAI_API_KEY to use real providers.",
            emulator_url,
        )
    else:
        log.info("online mode: providers %s", ", ".join(config.providers))
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        runtime.start_ray()
        base = runtime.deploy(config.resolved(emulator_url))
        if not wait_http(f"{base}/readyz", 120):
            log.error("the gateway did not become ready at %s", base)
            return 1
        state.write_text(json.dumps({"pid": os.getpid(), "base_url": base, "emulator": emulator_url}))
        print(f"LLM gateway ready at {base}  (OpenAI-compatible base URL: {base}/v1)", flush=True)
        print(_example(base, auth_mode(config)), flush=True)
        while not stop["now"]:
            time.sleep(0.2)
        return 0
    finally:
        runtime.stop_ray()
        if emulator is not None:
            emulator.terminate()
            emulator.wait(10)
        state.unlink(missing_ok=True)


def cmd_up(args: argparse.Namespace, config: GatewayConfig) -> int:
    mode = auth_mode(config)  # an unsafe open mode stops here, saying why (ConfigError)
    if mode == "keys" and not (os.environ.get(ADMIN_KEY_ENV) or config.auth.admin_keys):
        log.warning("auth.mode keys without an admin key: set %s (32+ characters) so keys can be created",
                    ADMIN_KEY_ENV)  # fmt: skip
    state = _state_file(config.server.port)
    if state.exists():
        info = json.loads(state.read_text())
        if _alive(info["pid"]):
            print(f"already running at {info['base_url']} (pid {info['pid']}); `llm-gateway down` stops it")
            return 1
    if args.foreground:
        return serve_foreground(config, state)
    argv = [sys.executable, "-m", "launcher.cli", "up", "--foreground"]
    if args.config:
        argv += ["--config", args.config]
    log_path = state.with_suffix(".log")
    with log_path.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://{config.server.host}:{config.server.port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and wait_http(f"{base}/readyz", 1):
            print(f"LLM gateway ready at {base}  (OpenAI-compatible base URL: {base}/v1); log: {log_path}")
            if config.is_offline:
                print("OFFLINE MODE: no provider credentials configured; providers are served by the local emulator.")
            print(_example(base, auth_mode(config)))
            return 0
        time.sleep(0.5)
    print(f"the gateway failed to start; see {log_path}", file=sys.stderr)
    if proc.poll() is None:
        proc.terminate()
    return 1


def _base_url(config: GatewayConfig) -> str:
    """The running gateway's URL (from its state file), else the configured address."""
    state = _state_file(config.server.port)
    if state.exists():
        return str(json.loads(state.read_text())["base_url"])
    return f"http://{config.server.host}:{config.server.port}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def cmd_down(config: GatewayConfig) -> int:
    state = _state_file(config.server.port)
    if not state.exists():
        print("no gateway is running (started by `llm-gateway up`) on port", config.server.port)
        return 0
    pid = json.loads(state.read_text())["pid"]
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        for _ in range(300):
            if not _alive(pid):
                break
            time.sleep(0.1)
    state.unlink(missing_ok=True)
    print(f"stopped the gateway (pid {pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llm-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "start the gateway"), ("down", "stop the gateway"), ("status", "show what runs")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", help="gateway YAML (default: the bundled offline-capable config)")
        if name == "up":
            p.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops everything")
    keys_cli.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "keys":
        return keys_cli.run(args, args.url or _base_url(config))
    if args.command == "up":
        try:
            return cmd_up(args, config)
        except ConfigError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
    if args.command == "down":
        return cmd_down(config)
    state = _state_file(config.server.port)
    print(state.read_text() if state.exists() else "not running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
