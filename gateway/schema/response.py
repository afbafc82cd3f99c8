"""The normalized chat response."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

from gateway.schema.chat import ToolCall
from gateway.schema.limits import RateStatus
from gateway.schema.usage import Usage

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "budget_exceeded"]


class ChatResponse(BaseModel):
    """One completed answer: text and/or tool calls, why it ended, what it cost in tokens, who served it."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: FinishReason
    usage: Usage
    provider: str
    model: str
    upstream_model: str
    attempts: int = 1
    latency_ms: float = 0.0
    cost_usd: Decimal | None = None  # None: no known price for the model (never a silent $0)
    route: str | None = None  # the route plan: task class and ordered candidates
    budget: str | None = None  # the budget decision (allow, shrink, downgrade) and its numbers
    rate: RateStatus | None = None  # where the caller stands on its rate limits (x-ratelimit-* headers)
    safety: str | None = None  # each guard's verdict (x-gateway-safety), when guards ran
    created: int = 0
