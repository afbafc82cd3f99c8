"""Retry-After and rate-limit reset parsing."""

from email.utils import formatdate

from gateway.providers.headers import parse_duration, rate_limit_reset_seconds, retry_after_seconds


def test_retry_after_ms_wins_over_seconds():
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5


def test_retry_after_seconds_and_http_date():
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    now = 1_700_000_000.0
    assert retry_after_seconds({"retry-after": formatdate(now + 20, usegmt=True)}, now=now) == 20.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_openai_reset_durations():
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1h2m3s") == 3723.0
    assert parse_duration("fast") is None
    assert rate_limit_reset_seconds({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}) == 360.0
