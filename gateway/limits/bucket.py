"""Token-bucket arithmetic in integers: amounts in milli-units (a request is 1 000, a token 1 000), time in ms.

A bucket holds up to `capacity` and refills `per_minute` continuously; its state is a level and the time it was
computed at, so refill is lazy (computed on read from the timestamp). A level may be negative: debt, charged after
a call used more than it was admitted for, which delays the calls after it. Rounding is always in the limit's
favour: a refill grants whole milli-units only, and moves the timestamp by the whole milliseconds they took
(rounded up), so a write forgoes at most one millisecond of refill and never grants what was not earned."""

from __future__ import annotations

from dataclasses import dataclass

MILLI = 1000
MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """How big a bucket is and how fast it refills (milli-units; per_minute 0: a pool of slots, e.g. streams)."""

    capacity: int
    per_minute: int

    def __post_init__(self) -> None:
        if self.capacity <= 0 or self.per_minute < 0:
            raise ValueError(f"a bucket needs capacity > 0 and per_minute >= 0, not {self.capacity}/{self.per_minute}")


@dataclass(frozen=True, slots=True)
class Level:
    """A bucket's level (milli-units, negative: debt) as of `at_ms` (Unix ms)."""

    milli: int
    at_ms: int


def full(spec: BucketSpec, now_ms: int) -> Level:
    return Level(spec.capacity, now_ms)


def refilled(spec: BucketSpec, level: Level, now_ms: int) -> Level:
    """The level at `now_ms`: what was there plus what the elapsed time refilled, never above capacity. A clock
    that went back refills nothing (the timestamp stays, so no time is counted twice)."""
    if now_ms <= level.at_ms or level.milli >= spec.capacity:
        return Level(min(level.milli, spec.capacity), max(now_ms, level.at_ms))
    earned = (now_ms - level.at_ms) * spec.per_minute // MINUTE_MS
    if level.milli + earned >= spec.capacity:
        return Level(spec.capacity, now_ms)
    # keep the remainder: advance the timestamp only by the time the earned amount took (exact, no drift)
    used_ms = -(-earned * MINUTE_MS // spec.per_minute) if earned else 0
    return Level(level.milli + earned, level.at_ms + used_ms)


def wait_ms(spec: BucketSpec, level: Level, need: int) -> int | None:
    """How long until the bucket holds `need` (0: now; None: never, it is larger than the bucket or a slot pool
    that only a release refills)."""
    if level.milli >= need:
        return 0
    if need > spec.capacity or spec.per_minute == 0:
        return None
    return -(-(need - level.milli) * MINUTE_MS // spec.per_minute)


def reset_ms(spec: BucketSpec, level: Level) -> int:
    """How long until the bucket is full again (the `x-ratelimit-reset-*` headers)."""
    return wait_ms(spec, level, spec.capacity) or 0


def share(level: int, want: int, need: int, holders: int) -> int:
    """What one grant takes from a bucket at `level`: 0 if not even `need` fits, else up to `want`, but no more than
    half of what is left split between the holders (near empty a lease shrinks to one call's need)."""
    if level < need or (need <= 0 and level <= 0):
        return 0
    return max(need, min(want, level // (2 * max(1, holders))))
