"""The shared peer harness on this gateway beside Portkey, plus the 1 000-stream case, as the hot-path ratio table.

    .venv/bin/python -m bench.peers [--checkout DIR] [--repeats 1] [--no-thousand]

Runs `$PEERS_WORK/bench_peers.sh direct custom portkey` (default ~/.cache/peers-work, installed by
../shared/bench/peers/setup.sh), the gateway in keys mode (a key seeded by bench.seed_key, budgets off unless
BENCH_BUDGETS is set), then the gateway alone under 1 000 concurrent streams paced 40 ms a chunk while the whole
gateway tree's PSS is sampled. Prints the issue-12 targets as a table (value, Portkey's, ratio, met).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.seed_key import seed

ROOT = Path(__file__).resolve().parent.parent
PORT = 8000


@dataclass
class PssSampler:
    """Samples the summed PSS of the gateway's process tree (from its `launcher.cli` process down) once a second."""

    peak_mb: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.peak_mb = max(self.peak_mb, _tree_pss_mb())


def _processes() -> dict[int, tuple[int, str]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            out[int(entry)] = (int(stat[stat.rindex(")") + 2 :].split()[1]), cmdline)
    return out


def _tree_pss_mb() -> float:
    procs = _processes()
    roots = [pid for pid, (_, cmd) in procs.items() if "launcher.cli up" in cmd]
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    seen, stack = set(), list(roots)
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack.extend(children.get(pid, []))
    return sum(_pss_kb(pid) for pid in seen) / 1024


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def harness_env(checkout: Path, keys_db: Path, extra: dict[str, str]) -> dict[str, str]:
    """The harness's environment: the gateway started from `checkout` in keys mode with a freshly seeded key."""
    keys = seed(keys_db)
    gateway = f"{sys.executable} -m launcher.cli up --foreground --config bench/gateway.bench.yaml"
    secrets = f"BENCH_KEYS_DB={keys['BENCH_KEYS_DB']} BENCH_PEPPER={keys['BENCH_PEPPER']}"
    command = f"cd {checkout} && exec env {secrets} PYTHONPATH={checkout} {gateway}"
    headers = f"authorization: Bearer {keys['BENCH_KEY']}"
    return {**os.environ, "CUSTOM_CMD": command, "CUSTOM_PORT": str(PORT), "CUSTOM_HEALTH_PATH": "/readyz",
            "CUSTOM_HEADERS": headers, **extra}  # fmt: skip


def run_harness(work: Path, env: dict[str, str], out: Path, targets: list[str]) -> list[dict]:
    """One harness run into `out`; its results.jsonl rows."""
    subprocess.run([str(work / "bench_peers.sh"), *targets], env={**env, "OUT": str(out)}, cwd=work, check=True)
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def cells(rows: list[dict], target: str) -> dict[str, float | None]:
    """The issue-12 cells of one target in one run."""
    chat = [r for r in rows if r["target"] == target and r["kind"] == "chat"]
    cpu = sorted(r["gw_cpu_ms_per_req"] for r in chat if r["conc"] >= 16 and r.get("gw_cpu_ms_per_req"))
    c1 = [r["lat_p50_us"] / 1000 for r in chat if r["conc"] == 1]

    def stream(kind: str, key: str) -> float | None:
        found = [r[key] for r in rows if r["target"] == target and r["kind"] == kind and r.get(key) is not None]
        if not found:
            return None
        return max(found) if key == "rps" else min(found)

    return {"rps": max((r["rps"] for r in chat), default=None), "cpu": cpu[len(cpu) // 2] if cpu else None,
            "c1_p50": min(c1, default=None), "s5_rps": stream("stream_d5", "rps"),
            "s5_ttfb": stream("stream_d5", "ttfb_p50_ms"), "s0_rps": stream("stream_d0", "rps")}  # fmt: skip


# (label, cell, rule): "ge" this gateway at least Portkey's, "le" at most; a number: at most that value.
TARGETS = [
    ("max req/s, non-streaming (>= Portkey)", "rps", "ge"),
    ("gateway CPU ms/request, median c>=16 (<= Portkey)", "cpu", "le"),
    ("added p50 at c=1, ms (<= 1.0)", "added", 1.0),
    ("16 streams x 20 chunks 5 ms apart: streams/s (>= Portkey)", "s5_rps", "ge"),
    ("same: first byte p50, ms (<= 10)", "s5_ttfb", 10.0),
    ("16 streams x 20 chunks 0 ms apart: streams/s (>= Portkey)", "s0_rps", "ge"),
    ("1 000 streams x 40 ms: errors (= 0)", "k_errors", 0.0),
    ("same: first byte p99, ms (<= 1000)", "k_ttfb99", 1000.0),
    ("same: whole-tree PSS peak, MB (<= 1229)", "k_pss", 1229.0),
]


def report(rows: list[dict], thousand: dict | None, pss_mb: float | None) -> str:
    """The ratio table: each target's value for this gateway and Portkey, and whether it is met."""
    ours, peer, direct = cells(rows, "custom"), cells(rows, "portkey"), cells(rows, "direct")
    for cells_of in (ours, peer):
        cells_of["added"] = cells_of["c1_p50"] - direct["c1_p50"] if cells_of["c1_p50"] and direct["c1_p50"] else None
    if thousand is not None:
        ours |= {"k_errors": float(sum(thousand.get(k) or 0 for k in ("errors", "non2xx"))),
                 "k_ttfb99": thousand.get("ttfb_p99_ms"), "k_pss": pss_mb}  # fmt: skip
    lines = ["| target | this gateway | Portkey | ratio | met |", "|---|---|---|---|---|"]
    for label, cell, rule in TARGETS:
        value, theirs = ours.get(cell), peer.get(cell)
        ratio = f"{value / theirs:.2f}x" if value and theirs else "-"  # an absolute bound is met by `rule` alone
        lines.append(f"| {label} | {_fmt(value)} | {_fmt(theirs)} | {ratio} | {_met(value, theirs, rule)} |")
    return "\n".join(lines)


def _met(value: float | None, theirs: float | None, rule: str | float) -> str:
    bound = theirs if isinstance(rule, str) else rule
    if value is None or bound is None:
        return "-"
    return "yes" if (value >= bound if rule == "ge" else value <= bound) else "NO"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def thousand_streams(work: Path, env: dict[str, str], out: Path) -> tuple[dict | None, float]:
    """The gateway alone under 1 000 concurrent streams of 100 chunks paced 40 ms apart; its stream row and PSS peak."""
    sampler = PssSampler()
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    # 100 chunks 40 ms apart: a 4 s stream, so the 1 000 are held open together (20 would end in 0.8 s)
    knobs = {"CONCS": " ", "STREAM_CONC": "1000", "STREAM_DELAYS": "40", "STREAM_CHUNKS": "100", "DURATION": "15"}
    try:
        rows = run_harness(work, {**env, **knobs}, out, ["custom"])
    finally:
        sampler.stop.set()
        thread.join()
    streams = [r for r in rows if r["kind"] == "stream_d40"]
    return (streams[-1] if streams else None), sampler.peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the gateway checkout to run (default: this one)")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("PEERS_WORK", "~/.cache/peers-work")))
    parser.add_argument("--repeats", default="1")
    parser.add_argument("--no-thousand", action="store_true", help="skip the 1 000-stream case")
    args = parser.parse_args()
    work, stamp = args.work.expanduser(), time.strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        env = harness_env(args.checkout.resolve(), Path(tmp) / "keys.db", {"REPEATS": args.repeats})
        rows = run_harness(work, env, work / "results" / f"{stamp}-peers", ["direct", "custom", "portkey"])
        thousand, pss = (
            (None, None) if args.no_thousand else thousand_streams(work, env, work / "results" / f"{stamp}-1000")
        )
    print(f"\n## Hot-path targets ({args.checkout.resolve()}, results in {work / 'results'}/{stamp}-*)\n")
    print(report(rows, thousand, pss))


if __name__ == "__main__":
    main()
