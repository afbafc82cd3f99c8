"""Gateway overhead benchmark: the same load against the emulator directly and through the gateway on Ray.

    ./dev bench [--seconds 10] [--concurrency 1 16 64] [--chunks 20] [--out bench/results]

Pinning as in ../shared/bench/peers: load client and emulator on CPU 0, the gateway (all its Ray
processes) on CPU 1. Everything is on 127.0.0.1 and every run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.load import run
from bench.seed_key import seed
from launcher.cli import wait_http

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(port: int, inter_token_ms: int, tokens: int, cpus: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            cpus,
            sys.executable,
            "-m",
            "gateway.emulators",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--inter-token-ms",
            str(inter_token_ms),
            "--answer-tokens",
            str(tokens),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not wait_http(f"http://127.0.0.1:{port}/health", 30):
        proc.kill()
        raise SystemExit("emulator did not start")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def scenarios(args: argparse.Namespace) -> list[tuple[str, dict, int, bool]]:
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello benchmark"}]}
    stream = {**chat, "stream": True, "stream_options": {"include_usage": True}}
    out = [(f"chat c={c}", chat, c, False) for c in args.concurrency]
    out += [(f"stream c={c}", stream, c, True) for c in (1, args.stream_concurrency)]
    return out


async def measure(base: dict[str, str], args: argparse.Namespace, label: str) -> list[dict]:
    rows = []
    for name, body, conc, is_stream in scenarios(args):
        for target, url in base.items():
            if target == "gateway" and args.gateway_model:
                body = {**body, "model": args.gateway_model}  # e.g. `auto`: the routing policy chooses
            token = args.token if target == "gateway" else "bench"
            result = await run(f"{url}/chat/completions", body, conc, args.seconds, is_stream, token=token)
            row = {"phase": label, "scenario": name, "target": target, **result.summary()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--stream-concurrency", type=int, default=16)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--delays", type=int, nargs="+", default=[0, 5], help="ms between streamed tokens")
    parser.add_argument("--gateway-cpus", default="1")
    parser.add_argument("--client-cpus", default="0")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--gateway-model", default="auto", help="model the gateway is asked for ('' = same as direct)")
    parser.add_argument("--budgets", action="store_true", help="budgets on (bench/budgets.bench.yaml, 4 accounts)")
    parser.add_argument("--limits", action="store_true", help="rate limits on (bench/limits.bench.yaml, 4 buckets)")
    args = parser.parse_args()
    emu_port, gw_port = free_port(), free_port()
    env = {
        **os.environ,
        "MOCK_URL": f"http://127.0.0.1:{emu_port}/openai/v1",
        "GATEWAY_PORT": str(gw_port),
        "LLM_GATEWAY_STATE_DIR": str(ROOT / ".gateway"),
    }
    keys = seed(Path(tempfile.mkdtemp(prefix="bench-keys-")) / "keys.db")  # a fresh key store: keys mode
    env |= keys
    args.token = keys["BENCH_KEY"]
    if args.budgets:  # a fresh ledger every run
        spend_db = Path(tempfile.mkdtemp(prefix="bench-spend-")) / "spend.db"
        env |= {"BENCH_BUDGETS": str(ROOT / "bench" / "budgets.bench.yaml"), "BENCH_SPEND_DB": str(spend_db)}
    if args.limits:  # fresh buckets every run
        limits_db = Path(tempfile.mkdtemp(prefix="bench-limits-")) / "limits.db"
        env |= {"BENCH_LIMITS": str(ROOT / "bench" / "limits.bench.yaml"), "BENCH_LIMITS_DB": str(limits_db)}
    emulator = start_emulator(emu_port, args.delays[0], args.chunks, args.client_cpus)
    gateway = subprocess.Popen(
        [
            "taskset",
            "-c",
            args.gateway_cpus,
            sys.executable,
            "-m",
            "launcher.cli",
            "up",
            "--foreground",
            "--config",
            str(ROOT / "bench" / "gateway.bench.yaml"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    rows: list[dict] = []
    try:
        if not wait_http(f"http://127.0.0.1:{gw_port}/readyz", 180):
            raise SystemExit("gateway did not start")
        base = {"direct": f"http://127.0.0.1:{emu_port}/openai/v1", "gateway": f"http://127.0.0.1:{gw_port}/v1"}
        for i, delay in enumerate(args.delays):
            if i:
                stop(emulator)
                emulator = start_emulator(emu_port, delay, args.chunks, args.client_cpus)
            rows += asyncio.run(measure(base, args, f"inter-token {delay} ms"))
        control = actor_calls(f"http://127.0.0.1:{gw_port}", rows, args.token)
    finally:
        stop(gateway)
        stop(emulator)
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = render(rows, args) + control
    (out / "summary.md").write_text(report)
    print(report)
    print(f"results: {out}")
    return 0


def actor_calls(gateway: str, rows: list[dict], token: str) -> str:
    """The replica's own count of control-plane actor calls, against the requests it served (incl. warm-ups)."""
    import urllib.request

    request = urllib.request.Request(f"{gateway}/v1/gateway/providers", headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        view = json.loads(r.read())
    calls = view.get("actor_calls")
    if calls is None:
        return "\nactor calls: not reported by this build\n"
    served = sum(r["n"] for r in rows if r["target"] == "gateway")
    keys = view.get("key_registry_calls", {}).get("request_path", "not reported")
    return (
        f"\nactor calls over the run: {calls['request_path']} on a request's path for {served} measured "
        f"requests (plus warm-ups), {calls['background']} by the background sync; key registry lookups on a "
        f"request's path: {keys}\n"
    )


def render(rows: list[dict], args: argparse.Namespace) -> str:
    by = {(r["phase"], r["scenario"], r["target"]): r for r in rows}
    lines = [
        "| phase | scenario | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 ms | direct req/s"
        " | gateway req/s |"
        " gateway TTFB p50 ms | gateway first token p50 ms | per-chunk overhead ms |",
        "|" + "---|" * 10,
    ]
    for (phase, scenario, target), r in by.items():
        if target != "gateway":
            continue
        d = by[(phase, scenario, "direct")]
        ttfb = f"{r['ttfb_p50_ms']:.2f}" if "ttfb_p50_ms" in r else ""
        ttft = f"{r['ttft_p50_ms']:.2f}" if "ttft_p50_ms" in r else ""
        per_chunk = ""
        if "mean_ms" in r and scenario.endswith("c=1"):
            per_chunk = f"{((r['mean_ms'] - r['ttfb_p50_ms']) - (d['mean_ms'] - d['ttfb_p50_ms'])) / args.chunks:.3f}"
        lines.append(
            f"| {phase} | {scenario} | {d['p50_ms']:.2f} / {d['p99_ms']:.2f} | {r['p50_ms']:.2f} / "
            f"{r['p99_ms']:.2f} | {r['p50_ms'] - d['p50_ms']:.2f} | {d['rps']:.0f} | {r['rps']:.0f} | {ttfb} |"
            f" {ttft} | {per_chunk} |"
        )
    errors = sum(r["errors"] for r in rows)
    lines.append(f"\n{args.seconds:g} s per cell; errors: {errors}; chunks per stream: {args.chunks}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
