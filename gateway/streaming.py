"""Stream plumbing shared by the HTTP APIs: heartbeats while the upstream is silent, and write coalescing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from gateway.schema import HeartbeatEvent, StreamEvent


class _Pump:
    """The one task of a stream: it reads `events` as fast as they come and keeps what the writer has not taken.

    Per event it costs a list append and, when the writer waits, one wake-up; the events one network read
    delivered arrive in the same loop turn, so the writer takes them as one batch (one socket write)."""

    def __init__(self, events: AsyncIterator[StreamEvent], ready: list[StreamEvent]) -> None:
        self.ready: list[StreamEvent] = ready
        self.ended = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._task = asyncio.ensure_future(self._run(events))

    async def _run(self, events: AsyncIterator[StreamEvent]) -> None:
        try:
            async for event in events:
                self.ready.append(event)
                if self._waiter is not None:
                    self._wake()
        except Exception as exc:
            self.error = exc
        finally:
            self.ended = True
            self._wake()
            await events.aclose()  # type: ignore[attr-defined]

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, seconds: float) -> bool:
        """Whether anything is ready (or the source ended) within `seconds`."""
        if self.ready or self.ended:
            return True
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(seconds, self._wake)
        try:
            await waiter
        finally:
            timer.cancel()
        return bool(self.ready) or self.ended

    def take(self) -> list[StreamEvent]:
        batch, self.ready = self.ready, []
        return batch

    async def aclose(self) -> None:
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task


async def batches_with_heartbeats(
    events: AsyncIterator[StreamEvent], interval: float, first: StreamEvent | None = None
) -> AsyncIterator[list[StreamEvent]]:
    """Group `events` into batches of what is ready now; a heartbeat whenever `interval` s pass with none.

    Each batch becomes one socket write at the edge. Events the upstream delivered in one network read are
    ready together, so they form one batch; an event that has to wait for the network starts the next.
    Writes then follow the upstream's own pacing instead of one per token (a write costs tens of µs of
    kernel time on loopback). A failure after ready events is raised once they are delivered. Closing this
    iterator (client gone) cancels the pump and closes `events`, and with it the upstream call. `first`, when
    given, is an event already read from `events`: it leads the first batch.
    """
    pump = _Pump(events, [first] if first is not None else [])
    try:
        while True:
            if not await pump.wait(interval):
                yield [HeartbeatEvent()]
                continue
            if pump.ready:
                yield pump.take()
            if pump.ended and not pump.ready:
                if pump.error is not None:
                    raise pump.error
                return
    finally:
        await pump.aclose()
