"""Normalized request, response, stream-event, usage and error models shared by every provider."""

from gateway.schema.chat import (
    CallBudget,
    ChatRequest,
    ContentPart,
    GatewayMetadata,
    ImagePart,
    Message,
    NamedToolChoice,
    ResponseFormat,
    TextPart,
    ToolCall,
    ToolSpec,
)
from gateway.schema.embeddings import EmbeddingsRequest, EmbeddingsResponse
from gateway.schema.errors import (
    ErrorInfo,
    ErrorKind,
    FailedAttempt,
    GatewayError,
    forbidden,
    unauthenticated,
    validation_error,
)
from gateway.schema.events import (
    STREAM_EVENT_ADAPTER,
    ErrorEvent,
    FinishEvent,
    HeartbeatEvent,
    StartEvent,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    UsageEvent,
)
from gateway.schema.response import ChatResponse, FinishReason
from gateway.schema.usage import Usage

__all__ = [
    "STREAM_EVENT_ADAPTER",
    "CallBudget",
    "ChatRequest",
    "ChatResponse",
    "ContentPart",
    "EmbeddingsRequest",
    "EmbeddingsResponse",
    "ErrorEvent",
    "ErrorInfo",
    "ErrorKind",
    "FailedAttempt",
    "FinishEvent",
    "FinishReason",
    "GatewayError",
    "GatewayMetadata",
    "HeartbeatEvent",
    "ImagePart",
    "Message",
    "NamedToolChoice",
    "ResponseFormat",
    "StartEvent",
    "StreamEvent",
    "TextDelta",
    "TextPart",
    "ToolCall",
    "ToolCallDelta",
    "ToolSpec",
    "Usage",
    "UsageEvent",
    "forbidden",
    "unauthenticated",
    "validation_error",
]
