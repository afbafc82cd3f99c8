"""Reading provider response headers: Retry-After in its several spellings and rate-limit reset durations."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """`6m0s`, `1s`, `250ms`, `1h2m` → seconds; None when it is not a duration."""
    text = text.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """The wait a provider asked for: `retry-after-ms`, then `retry-after` (seconds or HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def rate_limit_reset_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The later of OpenAI's `x-ratelimit-reset-requests|tokens` durations, if any."""
    if not headers:
        return None
    waits = [
        d
        for key in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        if (v := headers.get(key)) and (d := parse_duration(v)) is not None
    ]
    return max(waits) if waits else None
