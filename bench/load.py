"""A bounded closed-loop HTTP load client for 127.0.0.1: non-streaming latency/throughput and SSE stream timings."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass

import aiohttp


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    ttfb_ms: list[float]
    ttft_ms: list[float]  # to the first content token (the first byte may be a role-only chunk)

    def pct(self, values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, float]:
        out = {
            "rps": self.requests / self.seconds,
            "errors": self.errors,
            "n": self.requests,
            "p50_ms": self.pct(self.latencies_ms, 0.50),
            "p99_ms": self.pct(self.latencies_ms, 0.99),
        }
        if self.ttfb_ms:
            out |= {
                "ttfb_p50_ms": self.pct(self.ttfb_ms, 0.50),
                "ttfb_p99_ms": self.pct(self.ttfb_ms, 0.99),
                "ttft_p50_ms": self.pct(self.ttft_ms, 0.50),
                "mean_ms": statistics.fmean(self.latencies_ms),
            }
        return out


async def run(url: str, body: dict, concurrency: int, seconds: float, stream: bool, warmup: float = 1.0,
              token: str = "bench") -> Result:  # fmt: skip
    """Each of `concurrency` workers sends requests back to back for `seconds` (after a warm-up)."""
    payload = json.dumps(body).encode()
    # who is calling: budgets (when on) spend from these accounts; other upstreams ignore the headers
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}", "x-gateway-daemon": "executor",
               "x-gateway-org": "bench-org", "x-gateway-user": "bench-user"}  # fmt: skip
    lat: list[float] = []
    ttfb: list[float] = []
    ttft: list[float] = []
    counts = {"ok": 0, "err": 0}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one(record: bool) -> None:
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=payload, headers=headers) as r:
                    if stream:
                        first = token = None
                        done = False
                        async for line in r.content:
                            if first is None and line.startswith(b"data: "):
                                first = time.perf_counter()
                            if token is None and b'"content":"' in line and b'"content":""' not in line:
                                token = time.perf_counter()  # the first content (a role-only chunk is not)
                            if line.startswith(b"data: [DONE]"):
                                done = True
                        ok = r.status == 200 and done
                    else:
                        await r.read()
                        ok = r.status == 200
            except (TimeoutError, aiohttp.ClientError):
                ok, first, token = False, None, None
            t1 = time.perf_counter()
            if not record:
                return
            if ok:
                counts["ok"] += 1
                lat.append((t1 - t0) * 1000)
                if stream and first is not None:
                    ttfb.append((first - t0) * 1000)
                if stream and token is not None:
                    ttft.append((token - t0) * 1000)
            else:
                counts["err"] += 1

        async def worker(until: float, record: bool) -> None:
            while time.perf_counter() < until:
                await one(record)

        warm_until = time.perf_counter() + warmup
        await asyncio.gather(*(worker(warm_until, False) for _ in range(concurrency)))
        start = time.perf_counter()
        await asyncio.gather(*(worker(start + seconds, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return Result(counts["ok"], counts["err"], elapsed, lat, ttfb, ttft)
