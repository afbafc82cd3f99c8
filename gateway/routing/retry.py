"""What to do after a failed attempt: retry the same model (after how long), fall back to the next, or give up."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from gateway.routing.policy import Retry
from gateway.schema import GatewayError
from gateway.schema.errors import SAME_MODEL  # the `same_model` column of the one error table


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """After a failed attempt: retry the same model (after `delay_s`), fall back to the next, or stop."""

    action: Literal["retry", "fallback", "stop"]
    delay_s: float = 0.0
    why: str = ""


def decide(
    error: GatewayError, tries_on_model: int, total_tries: int, rules: Retry, rand: float | None = None
) -> RetryDecision:
    """`tries_on_model` / `total_tries` count attempts made so far (≥ 1).

    context_length never retries the same model; content_filtered, bad_request and budget errors
    are final (the next model would refuse or bill the same); a Retry-After longer than
    `max_retry_after_s` falls back rather than waits; retries back off exponentially with jitter.
    """
    if total_tries >= rules.total:
        return RetryDecision("stop", why=f"retry budget spent ({rules.total} attempts)")
    if not error.fallbackable and not error.retryable:
        return RetryDecision("stop", why=f"{error.kind.value} is final")
    if error.kind in SAME_MODEL and error.retryable and tries_on_model < rules.per_candidate:
        if error.retry_after is not None:
            if error.retry_after > rules.max_retry_after_s:
                return RetryDecision("fallback", why=f"Retry-After {error.retry_after:g} s is too long to wait")
            return RetryDecision("retry", error.retry_after, f"honouring Retry-After {error.retry_after:g} s")
        backoff = min(rules.backoff_max_s, rules.backoff_base_s * 2 ** (tries_on_model - 1))
        jitter = random.random() if rand is None else rand
        return RetryDecision("retry", backoff * (0.5 + jitter / 2), f"{error.kind.value}: backing off")
    if error.fallbackable:
        return RetryDecision("fallback", why=f"{error.kind.value}: next candidate")
    return RetryDecision("stop", why=f"{error.kind.value} is final")
