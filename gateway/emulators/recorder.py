"""Bounded, thread-safe-enough log of received requests and of the calls a provider would bill."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    """One request as it reached the emulator."""

    provider: str
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    fault: str | None
    request_id: str
    time: float = field(default_factory=time.time)


@dataclass
class BillingRecord:
    """One billable call: what the provider would charge for."""

    provider: str
    model: str
    endpoint: str
    request_id: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    stream: bool = False
    outcome: str = "ok"
    time: float = field(default_factory=time.time)
    # Prompt-cache writes, for providers that bill them apart (Anthropic, Bedrock); None elsewhere.
    # `input_tokens` is the whole prompt, cache reads (`cached_input_tokens`) and writes included.
    cache_write_input_tokens: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The record as the `/_emulator/billing` JSON, without the cache-write field where it does not apply."""
        data = asdict(self)
        if self.cache_write_input_tokens is None:
            del data["cache_write_input_tokens"]
        return data


class Recorder:
    """Keeps the last `maxlen` requests and billing records (deque appends are atomic)."""

    def __init__(self, maxlen: int = 20_000) -> None:
        self.requests: deque[RequestRecord] = deque(maxlen=maxlen)
        self.billing: deque[BillingRecord] = deque(maxlen=maxlen)

    def record_request(self, record: RequestRecord) -> None:
        self.requests.append(record)

    def record_billing(self, record: BillingRecord) -> None:
        self.billing.append(record)

    def clear(self) -> None:
        self.requests.clear()
        self.billing.clear()

    def requests_json(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in list(self.requests)]

    def billing_json(self) -> list[dict[str, Any]]:
        return [r.as_json() for r in list(self.billing)]
