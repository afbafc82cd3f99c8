"""The rate-limit headers of an answer or a 429: OpenAI's `x-ratelimit-*` (reset as a duration, `1.2s`, `6m0s`)
or, on `/v1/messages`, Anthropic's `anthropic-ratelimit-*` (reset as an RFC 3339 time)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from gateway.schema.limits import RateStatus

OPENAI_NAMES = ("x-ratelimit-limit-{}", "x-ratelimit-remaining-{}", "x-ratelimit-reset-{}")
ANTHROPIC_NAMES = ("anthropic-ratelimit-{}-limit", "anthropic-ratelimit-{}-remaining", "anthropic-ratelimit-{}-reset")


def duration(ms: int) -> str:
    """OpenAI's reset format: `20ms`, `1.2s`, `6m0s`."""
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        text = f"{ms / 1000:.1f}".removesuffix(".0")
        return f"{text}s"
    return f"{ms // 60_000}m{(ms % 60_000) // 1000}s"


def _instant(ms: int) -> str:
    at = datetime.fromtimestamp(time.time() + ms / 1000, tz=UTC).replace(microsecond=0)
    return at.isoformat().replace("+00:00", "Z")


def rate_headers(status: RateStatus | None, anthropic: bool = False) -> dict[str, str]:
    if status is None:
        return {}
    names, reset = (ANTHROPIC_NAMES, _instant) if anthropic else (OPENAI_NAMES, duration)
    out: dict[str, str] = {}
    for kind, limit, left, reset_ms in (
        ("requests", status.requests_limit, status.requests_remaining, status.requests_reset_ms),
        ("tokens", status.tokens_limit, status.tokens_remaining, status.tokens_reset_ms),
    ):
        if limit is not None:
            out[names[0].format(kind)] = str(limit)
            out[names[1].format(kind)] = str(left)
            out[names[2].format(kind)] = reset(reset_ms or 0)
    return out
