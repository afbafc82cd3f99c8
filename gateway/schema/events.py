"""Typed stream events: a discriminated union kept typed until the edge (SSE encoding is the ingress's job)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from gateway.schema.errors import ErrorInfo
from gateway.schema.limits import RateStatus
from gateway.schema.response import FinishReason
from gateway.schema.usage import Usage


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class StartEvent(_Event):
    """The upstream accepted the call; content follows."""

    type: Literal["start"] = "start"
    id: str
    provider: str
    model: str
    upstream_model: str
    attempt: int = 1
    route: str | None = None
    budget: str | None = None  # the budget decision (allow, shrink, downgrade) and its numbers
    rate: RateStatus | None = None  # where the caller stands on its rate limits (x-ratelimit-* headers)
    safety: str | None = None  # the input guards' verdicts (x-gateway-safety), when guards ran


class TextDelta(_Event):
    type: Literal["text_delta"] = "text_delta"
    text: str


class ToolCallDelta(_Event):
    """A piece of tool call `index`: the first piece carries id and name, later ones argument text."""

    type: Literal["tool_call_delta"] = "tool_call_delta"
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class UsageEvent(_Event):
    """Running (or, from the provider, final) token counters."""

    type: Literal["usage"] = "usage"
    usage: Usage


class HeartbeatEvent(_Event):
    """Sent on a fixed interval while the upstream is silent."""

    type: Literal["heartbeat"] = "heartbeat"


class FinishEvent(_Event):
    """The stream completed: why it ended, the final usage and (when priced) the cost."""

    type: Literal["finish"] = "finish"
    finish_reason: FinishReason
    usage: Usage
    cost_usd: Decimal | None = None
    latency_ms: float = 0.0
    attempts: int = 1
    safety: str | None = None  # every guard's verdict, input, stream and output, when guards ran


class ErrorEvent(_Event):
    """The stream failed after it started; never looks like a finish."""

    type: Literal["error"] = "error"
    error: ErrorInfo
    usage: Usage | None = None


StreamEvent = Annotated[
    StartEvent | TextDelta | ToolCallDelta | UsageEvent | HeartbeatEvent | FinishEvent | ErrorEvent,
    Field(discriminator="type"),
]
STREAM_EVENT_ADAPTER: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)
