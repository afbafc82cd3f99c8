"""A small server-sent-events decoder over an async iterator of text lines (shared by the SSE-speaking adapters)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEvent:
    event: str | None
    data: str


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[SSEvent]:
    """Events per the SSE spec: `event:`/`data:` fields, comments ignored, a blank line dispatches.

    An event still pending when the body ends is dispatched too (a server that closes without a
    trailing blank line still sent it); whether the stream was *complete* is the caller's
    question (its terminal marker), not the decoder's.
    """
    event: str | None = None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data and (joined := "\n".join(data)):
                yield SSEvent(event, joined)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
    if data and (joined := "\n".join(data)):
        yield SSEvent(event, joined)
