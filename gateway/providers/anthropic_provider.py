"""The Anthropic adapter: Messages, streamed and not, in the official SDK's wire format (retries off)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic

from gateway.config import ProviderConfig
from gateway.json_codec import loads
from gateway.providers.anthropic_errors import map_anthropic_error, type_kind
from gateway.providers.anthropic_messages import STOP_REASONS, content_of, messages_body, usage_of
from gateway.providers.base import Target, new_id, provider_error
from gateway.providers.forced_json import ToolBlocks, finish_of
from gateway.providers.stream_driver import Ending, drive
from gateway.providers.transport import provider_http
from gateway.schema import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ErrorKind,
    FinishReason,
    GatewayError,
    StreamEvent,
    TextDelta,
    Usage,
    UsageEvent,
)


class AnthropicProvider:
    """One configured Anthropic endpoint (api.anthropic.com or the emulator)."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self._http = provider_http(anthropic, anthropic.AsyncAnthropic, config, name, map_anthropic_error)

    def unsupported(self, request: ChatRequest | EmbeddingsRequest, target: Target) -> str | None:
        """Nothing in the normalized schema is refused before the call (images by URL included)."""
        return None

    async def aclose(self) -> None:
        await self._http.aclose()

    def _fail(
        self, kind: ErrorKind, message: str, target: Target, usage: Usage | None = None, **kw: Any
    ) -> GatewayError:
        return provider_error(self.name, kind, message, target, usage, **kw)

    def _refused(self, target: Target, usage: Usage) -> GatewayError:
        return self._fail(
            ErrorKind.CONTENT_FILTERED,
            "the model refused to answer (stop_reason=refusal)",
            target,
            usage,
            provider_code="refusal",
        )

    def finish(self, stop_reason: str | None, target: Target, usage: Usage, json_mode: bool) -> FinishReason:
        """The normalized finish reason; a refusal is no answer (content_filtered, with what it billed)."""
        finish = STOP_REASONS.get(stop_reason or "", "stop")
        if finish == "content_filter":
            raise self._refused(target, usage)
        return finish_of(finish, json_mode)

    async def complete(self, request: ChatRequest, target: Target) -> ChatResponse:
        raw = await self._http.post_json("/v1/messages", messages_body(request, target, stream=False), target)
        usage = usage_of(raw.get("usage"))
        finish = self.finish(raw.get("stop_reason"), target, usage, request.wants_json)
        text, calls = content_of(raw.get("content") or [], request.wants_json)
        return ChatResponse(
            id=raw.get("id") or new_id("msg"), text=text, tool_calls=calls, finish_reason=finish, usage=usage,
            provider=self.name, model=target.name, upstream_model=raw.get("model") or target.upstream,
            created=int(time.time()),
        )  # fmt: skip

    def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamEvent]:
        return drive(_MessagesStream(self, request, target), target)

    async def count_tokens(self, request: ChatRequest, target: Target) -> int:
        """The provider's own count of the prompt (`POST /v1/messages/count_tokens`), cache reads included."""
        body = messages_body(request, target, stream=False)
        body.pop("max_tokens", None)
        raw = await self._http.post_json("/v1/messages/count_tokens", body, target)
        return int(raw.get("input_tokens") or 0)

    async def embed(self, request: EmbeddingsRequest, target: Target) -> EmbeddingsResponse:
        raise GatewayError(ErrorKind.BAD_REQUEST, "Anthropic offers no embeddings API", provider=self.name,
                           model=target.name, param="model")  # fmt: skip


class _MessagesStream:
    """One streamed Messages call: SSE events in, translated deltas and terminal facts out (see `drive`)."""

    id_prefix, marker = "msg", "message_stop"

    def __init__(self, adapter: AnthropicProvider, request: ChatRequest, target: Target) -> None:
        self.name = adapter.name
        self._adapter, self._request, self._target = adapter, request, target
        self._http = adapter._http
        self._upstream: Any = None
        self._blocks = ToolBlocks(request.wants_json)
        self._usage: dict[str, Any] = {}  # Anthropic's counters, merged as message_start and message_delta send them

    async def open(self) -> None:
        body = messages_body(self._request, self._target, stream=True)
        self._upstream = await self._http.open_stream("/v1/messages", body, self._target)

    async def events(self) -> AsyncIterator[StreamEvent | Ending]:
        async for sse in self._http.events(self._upstream):
            event = loads(sse.data)
            kind = event.get("type") or sse.event
            if kind == "content_block_delta":
                if (delta := self._delta(event)) is not None:
                    yield delta
            elif kind == "content_block_start":
                block = event.get("content_block") or {}
                if block.get("type") == "tool_use":
                    start = self._blocks.start(event.get("index", 0), block.get("name"), block.get("id"))
                    if start is not None:
                        yield start
            elif kind == "message_start":
                self._usage.update((event.get("message") or {}).get("usage") or {})
                yield UsageEvent(usage=usage_of(self._usage))  # the prompt's count, before any output
            elif kind == "message_delta":
                self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
                yield Ending(stop=(event.get("delta") or {}).get("stop_reason"), usage=usage_of(self._usage))
            elif kind == "message_stop":
                yield Ending(marker=True)
                return
            elif kind == "error":
                raise self._error_event(event.get("error") or {})

    def _delta(self, event: dict[str, Any]) -> StreamEvent | None:
        delta = event.get("delta") or {}
        if delta.get("type") == "text_delta":
            return TextDelta(text=delta.get("text", ""))
        if delta.get("type") == "input_json_delta":
            return self._blocks.piece(event.get("index", 0), delta.get("partial_json", ""))
        return None

    def _error_event(self, error: dict[str, Any]) -> GatewayError:
        """An `error` event, classified by its type (the driver adds the usage so far, and makes it truncated once
        content flowed)."""
        message = str(error.get("message", ""))
        return self._adapter._fail(type_kind(error.get("type"), message), f"error inside the stream: {message}",
                                   self._target, provider_code=error.get("type"))  # fmt: skip

    def finish(self, stop: Any, usage: Usage) -> FinishReason:
        return self._adapter.finish(stop, self._target, usage, self._request.wants_json)

    def error(self, exc: BaseException, *, started: bool, usage: Usage | None) -> GatewayError:
        return self._http.error(exc, self._target, started=started, usage=usage)

    async def close(self) -> None:
        if self._upstream is not None:
            await self._http.close_stream(self._upstream)
