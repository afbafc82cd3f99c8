"""The one stream driver: the steps every adapter's stream shares — open, the start event, counting deltas, the
terminal facts and the completeness check, "broke after content → truncated_stream", closing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.providers.base import Target, new_id, provider_error
from gateway.schema import (
    ErrorKind,
    FinishEvent,
    FinishReason,
    GatewayError,
    StartEvent,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from gateway.schema.errors import BROKE_MID_STREAM


@dataclass(frozen=True, slots=True)
class Ending:
    """A terminal fact an adapter read from its upstream; a field left at its default says nothing new.
    `stop`: the provider's own stop reason; `usage`: its usage (running or final); `marker`: the terminal
    marker itself arrived ([DONE], message_stop, a finishReason, response.completed)."""

    stop: Any = None
    usage: Usage | None = None
    marker: bool = False


class StreamSource(Protocol):
    """One upstream stream as an adapter sees it. `events` yields translated deltas (TextDelta, ToolCallDelta,
    UsageEvent for an early prompt count) and `Ending` facts; it raises GatewayError for an error the
    provider sent inside the stream, anything else for a broken transport (classified by `error`)."""

    name: str  # the provider key
    id_prefix: str
    marker: str  # what a complete stream ends with, for the truncated_stream message

    async def open(self) -> None: ...

    def events(self) -> AsyncIterator[StreamEvent | Ending]: ...

    def finish(self, stop: Any, usage: Usage) -> FinishReason:
        """The normalized finish reason; raises for an ending that is no answer (filtered, malformed)."""
        ...

    def error(self, exc: BaseException, *, started: bool, usage: Usage | None) -> GatewayError: ...

    async def close(self) -> None: ...


class _Progress:
    """What one stream relayed so far: its deltas, the stop reason, the provider's usage, the marker."""

    __slots__ = ("billed", "deltas", "early", "marker", "stop")

    def __init__(self) -> None:
        self.deltas = 0
        self.stop: Any = None
        self.billed: Usage | None = None  # the provider's usage from a terminal fact
        self.early: Usage | None = None  # a prompt count sent before the output
        self.marker = False

    def count(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta) or (isinstance(event, ToolCallDelta) and event.arguments):
            self.deltas += 1
        elif isinstance(event, UsageEvent) and self.early is None:
            self.early = event.usage

    def note(self, fact: Ending) -> None:
        if fact.stop is not None:
            self.stop = fact.stop
        if fact.usage is not None:
            self.billed = fact.usage
        self.marker = self.marker or fact.marker

    @property
    def complete(self) -> bool:
        """A stop reason, and then the marker or the provider's usage: a stream that ended cleanly after both
        is complete even without its marker (a second billed call to continue it would buy nothing)."""
        return self.stop is not None and (self.marker or self.billed is not None)

    def usage(self) -> Usage:
        """The provider's usage; without one, the prompt count it sent and at least a token a delta relayed, so a
        broken call is never booked as free (the relay counts the relayed text with the tokenizer on top)."""
        if self.billed is not None:
            return self.billed
        output = self.deltas
        if self.early is None:
            return Usage(output_tokens=output)
        return self.early.model_copy(update={"output_tokens": max(output, self.early.output_tokens)})


def _broken(exc: GatewayError, progress: _Progress, target: Target) -> GatewayError:
    """An error the provider sent inside the stream: once content was relayed, a kind that breaks a stream
    becomes truncated_stream (continuable), with what was billed so far."""
    usage = exc.usage or progress.usage()
    if progress.deltas and exc.kind in BROKE_MID_STREAM and exc.kind is not ErrorKind.TRUNCATED_STREAM:
        message = f"stream broke after it started ({exc.kind.value}): {exc.message}"
        return GatewayError(ErrorKind.TRUNCATED_STREAM, message, provider=exc.provider, model=target.name,
                            usage=usage, provider_code=exc.provider_code)  # fmt: skip
    exc.usage = usage
    return exc


async def drive(source: StreamSource, target: Target) -> AsyncIterator[StreamEvent]:
    """StartEvent once the upstream accepted the call, the adapter's deltas, then exactly one FinishEvent — or
    a GatewayError (truncated_stream when the stream broke after content or ended incomplete)."""
    try:
        await source.open()
    except Exception as exc:
        raise source.error(exc, started=False, usage=None) from None
    progress, events = _Progress(), source.events()
    try:
        yield StartEvent(id=new_id(source.id_prefix), provider=source.name, model=target.name,
                         upstream_model=target.upstream)  # fmt: skip
        async for item in events:
            if isinstance(item, Ending):
                progress.note(item)
                continue
            progress.count(item)
            yield item
    except GatewayError as exc:
        raise _broken(exc, progress, target) from None
    except Exception as exc:
        raise source.error(exc, started=progress.deltas > 0, usage=progress.usage()) from None
    finally:
        await events.aclose()  # type: ignore[attr-defined]  # the adapter's reader ends now, not at collection
        await source.close()
    usage = progress.usage()
    if not progress.complete:
        raise provider_error(source.name, ErrorKind.TRUNCATED_STREAM, f"the stream ended without {source.marker} "
                             f"after {progress.deltas} deltas", target, usage)  # fmt: skip
    yield FinishEvent(finish_reason=source.finish(progress.stop, usage), usage=usage)
