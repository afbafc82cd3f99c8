"""Stream plumbing shared by the HTTP APIs: heartbeats while the upstream is silent, and write coalescing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from gateway.schema import HeartbeatEvent, StreamEvent

MAX_BATCH = 64


async def batches_with_heartbeats(
    events: AsyncIterator[StreamEvent], interval: float
) -> AsyncIterator[list[StreamEvent]]:
    """Group `events` into batches of what is ready now; a heartbeat whenever `interval` s pass with none.

    Each batch becomes one socket write at the edge. An event the upstream delivered in the same
    network read as the previous one is ready without waiting, so it joins the batch; an event
    that has to wait for the network ends the batch. Writes then follow the upstream's own
    pacing instead of one per token (a write costs tens of µs of kernel time on loopback). Closing
    this iterator (client gone) cancels the pending read and closes `events`, and with it the
    upstream call.
    """
    pending: asyncio.Future[StreamEvent] | None = None
    exhausted = False
    try:
        while not exhausted:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            if not pending.done():
                done, _ = await asyncio.wait((pending,), timeout=interval)
                if not done:
                    yield [HeartbeatEvent()]
                    continue
            batch: list[StreamEvent] = []
            while True:
                task, pending = pending, None
                try:
                    batch.append(task.result())
                except StopAsyncIteration:
                    exhausted = True
                    break
                except BaseException:
                    if batch:
                        yield batch
                    raise
                if len(batch) >= MAX_BATCH:
                    break
                pending = asyncio.ensure_future(anext(events))
                await asyncio.sleep(0)  # one loop turn: an event already buffered completes in it
                if not pending.done():
                    break
            if batch:
                yield batch
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        await events.aclose()  # type: ignore[attr-defined]
