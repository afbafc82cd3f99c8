"""Emulator settings, per-request timing overrides and the shared per-emulator context."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.emulators.recorder import Recorder

HDR_TTFT = "x-emulator-ttft-ms"
HDR_INTER_TOKEN = "x-emulator-inter-token-ms"
HDR_LATENCY = "x-emulator-latency-ms"
HDR_TOKENS = "x-emulator-tokens"
HDR_SLOW = "x-emulator-slow-ms"


@dataclass
class EmulatorSettings:
    """Knobs for every provider emulator; all delays are in milliseconds."""

    ttft_ms: float = 0.0
    inter_token_ms: float = 0.0
    latency_ms: float = 0.0
    answer_tokens: int = 24
    slow_first_token_ms: float = 3000.0
    context_window: int = 128_000
    reasoning_tokens: int = 16
    cache_min_tokens: int = 128
    hang_cap_s: float = 300.0
    stall_cap_s: float = 300.0
    recorder_maxlen: int = 20_000
    record_requests: bool = True  # False: keep billing only (long benchmarks with big bodies)
    ratelimit_requests: int = 10_000
    ratelimit_tokens: int = 10_000_000
    client_max_size: int = 64 * 1024 * 1024
    api_keys: tuple[str, ...] = ()  # when set, OpenAI and Anthropic refuse any other key (401), as for a rotated one


@dataclass(frozen=True)
class Timing:
    """Timing resolved for one request (settings overridden by `x-emulator-*` headers)."""

    ttft_s: float
    inter_token_s: float
    latency_s: float
    answer_tokens: int
    slow_s: float


def _num(headers: Mapping[str, str], name: str, default: float) -> float:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if value >= 0 else default


def resolve_timing(settings: EmulatorSettings, headers: Mapping[str, str]) -> Timing:
    """Apply the per-request override headers to the emulator settings."""
    return Timing(
        ttft_s=_num(headers, HDR_TTFT, settings.ttft_ms) / 1000.0,
        inter_token_s=_num(headers, HDR_INTER_TOKEN, settings.inter_token_ms) / 1000.0,
        latency_s=_num(headers, HDR_LATENCY, settings.latency_ms) / 1000.0,
        answer_tokens=max(1, int(_num(headers, HDR_TOKENS, settings.answer_tokens))),
        slow_s=_num(headers, HDR_SLOW, settings.slow_first_token_ms) / 1000.0,
    )


class BoundedKeySet:
    """An insertion-ordered set that forgets its oldest keys beyond `maxlen`."""

    def __init__(self, maxlen: int = 50_000) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._maxlen = maxlen

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add(self, key: str) -> None:
        self._keys[key] = None
        if len(self._keys) > self._maxlen:
            self._keys.popitem(last=False)

    def clear(self) -> None:
        self._keys.clear()


@dataclass
class EmulatorContext:
    """State shared by all provider modules of one emulator instance."""

    settings: EmulatorSettings
    recorder: Recorder
    once_seen: BoundedKeySet = field(default_factory=BoundedKeySet)
    prompt_cache: BoundedKeySet = field(default_factory=BoundedKeySet)
    outages: dict[str, tuple[str, float]] = field(default_factory=dict)  # model -> (fault name, until monotonic)

    def outage(self, model: str) -> str | None:
        """The fault a switched-on outage gives `model` now (None when it is up)."""
        entry = self.outages.get(model)
        if entry is None:
            return None
        if time.monotonic() >= entry[1]:
            del self.outages[model]
            return None
        return entry[0]

    def reset(self) -> None:
        self.recorder.clear()
        self.once_seen.clear()
        self.prompt_cache.clear()
        self.outages.clear()
