"""Stream plumbing shared by the HTTP APIs: heartbeats while the upstream is silent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from gateway.schema import HeartbeatEvent, StreamEvent


async def with_heartbeats(events: AsyncIterator[StreamEvent], interval: float) -> AsyncIterator[StreamEvent]:
    """Pass `events` through, inserting a HeartbeatEvent whenever `interval` seconds pass without one.

    Closing this iterator (client gone) cancels the pending read and closes `events`, which
    closes the upstream call.
    """
    pending: asyncio.Future[StreamEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait((pending,), timeout=interval)
            if not done:
                yield HeartbeatEvent()
                continue
            task, pending = pending, None
            try:
                event = task.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        await events.aclose()  # type: ignore[attr-defined]
