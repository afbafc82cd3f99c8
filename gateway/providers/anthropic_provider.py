"""The Anthropic adapter: Messages, streamed and not, through the official SDK's client (retries off)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic

from gateway.config import ProviderConfig
from gateway.providers.anthropic_errors import map_anthropic_error, type_kind
from gateway.providers.anthropic_messages import JSON_TOOL, STOP_REASONS, content_of, messages_body, usage_of
from gateway.providers.base import Target, new_id, provider_error
from gateway.providers.sdk_http import SdkHttp, sdk_client
from gateway.schema import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ErrorKind,
    FinishEvent,
    GatewayError,
    StartEvent,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
)


class AnthropicProvider:
    """One configured Anthropic endpoint (api.anthropic.com or the emulator)."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        client = sdk_client(anthropic, anthropic.AsyncAnthropic, config)
        self._http = SdkHttp(client, name, map_anthropic_error)

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

    async def complete(self, request: ChatRequest, target: Target) -> ChatResponse:
        raw = await self._http.post_json("/v1/messages", messages_body(request, target, stream=False), target)
        usage = usage_of(raw.get("usage"))
        finish = STOP_REASONS.get(raw.get("stop_reason") or "", "stop")
        if finish == "content_filter":
            raise self._refused(target, usage)
        text, calls = content_of(raw.get("content") or [], request.wants_json)
        if request.wants_json and finish == "tool_calls":
            finish = "stop"
        return ChatResponse(
            id=raw.get("id") or new_id("msg"), text=text, tool_calls=calls, finish_reason=finish, usage=usage,
            provider=self.name, model=target.name, upstream_model=raw.get("model") or target.upstream,
            created=int(time.time()),
        )  # fmt: skip

    async def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamEvent]:
        body = messages_body(request, target, stream=True)
        upstream = await self._http.open_stream("/v1/messages", body, target)
        json_mode = request.wants_json
        usage: dict[str, Any] = {}
        stop_reason: str | None = None
        done = False
        tools: dict[int, int] = {}  # content block index -> tool call index
        json_blocks: set[int] = set()
        deltas = 0
        try:
            yield StartEvent(id=new_id("msg"), provider=self.name, model=target.name, upstream_model=target.upstream)
            async for sse in self._http.events(upstream):
                event = json.loads(sse.data)
                kind = event.get("type") or sse.event
                if kind == "content_block_delta":
                    delta = event.get("delta") or {}
                    index = event.get("index", 0)
                    if delta.get("type") == "text_delta":
                        deltas += 1
                        yield TextDelta(text=delta.get("text", ""))
                    elif delta.get("type") == "input_json_delta":
                        deltas += 1
                        if index in json_blocks:
                            yield TextDelta(text=delta.get("partial_json", ""))
                        elif index in tools:
                            yield ToolCallDelta(index=tools[index], arguments=delta.get("partial_json", ""))
                elif kind == "content_block_start":
                    block = event.get("content_block") or {}
                    if block.get("type") == "tool_use":
                        if json_mode and block.get("name") == JSON_TOOL:
                            json_blocks.add(event.get("index", 0))
                        else:
                            tools[event.get("index", 0)] = len(tools)
                            yield ToolCallDelta(index=tools[event.get("index", 0)], id=block.get("id"),
                                                name=block.get("name"))  # fmt: skip
                elif kind == "message_start":
                    usage.update((event.get("message") or {}).get("usage") or {})
                    yield UsageEvent(usage=usage_of(usage))  # the prompt's count, before any output
                elif kind == "message_delta":
                    usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
                    stop_reason = (event.get("delta") or {}).get("stop_reason") or stop_reason
                elif kind == "message_stop":
                    done = True
                    break
                elif kind == "error":
                    error = event.get("error") or {}
                    raise self._fail(type_kind(error.get("type"), str(error.get("message", ""))),
                                     f"error inside the stream: {error.get('message')}", target,
                                     usage_of(usage) if usage else Usage(output_tokens=deltas),
                                     provider_code=error.get("type"))  # fmt: skip
        except GatewayError as exc:  # an `error` event: classified by its type, truncated once content flowed
            if deltas and exc.kind is not ErrorKind.CONTENT_FILTERED:
                raise self._fail(ErrorKind.TRUNCATED_STREAM, f"stream broke after it started: {exc.message}", target,
                                 exc.usage, provider_code=exc.provider_code) from None  # fmt: skip
            raise
        except Exception as exc:
            partial = usage_of(usage) if usage else Usage(output_tokens=deltas)
            raise self._http.error(exc, target, started=deltas > 0, usage=partial) from None
        finally:
            await upstream.aclose()
        final = usage_of(usage) if usage else Usage(output_tokens=deltas)
        if not done and stop_reason is None:  # message_delta's stop_reason and usage arrived: complete anyway
            raise self._fail(ErrorKind.TRUNCATED_STREAM, f"the stream ended without message_stop after {deltas} "
                             "deltas", target, final)  # fmt: skip
        finish = STOP_REASONS.get(stop_reason or "", "stop")
        if finish == "content_filter":
            raise self._refused(target, final)
        if json_mode and finish == "tool_calls":
            finish = "stop"
        yield FinishEvent(finish_reason=finish, usage=final)  # type: ignore[arg-type]

    async def count_tokens(self, request: ChatRequest, target: Target) -> int:
        """The provider's own count of the prompt (`POST /v1/messages/count_tokens`), cache reads included."""
        body = messages_body(request, target, stream=False)
        body.pop("max_tokens", None)
        raw = await self._http.post_json("/v1/messages/count_tokens", body, target)
        return int(raw.get("input_tokens") or 0)

    async def embed(self, request: EmbeddingsRequest, target: Target) -> EmbeddingsResponse:
        raise GatewayError(ErrorKind.BAD_REQUEST, "Anthropic offers no embeddings API", provider=self.name,
                           model=target.name, param="model")  # fmt: skip
