"""The OpenAI adapter: Chat Completions, Responses and Embeddings through the official SDK (retries off)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai

from gateway.config import ProviderConfig
from gateway.providers.base import Target
from gateway.providers.openai_chat import FINISH_REASONS, chat_params, tool_calls_from_openai, usage_from_openai
from gateway.providers.openai_errors import map_openai_error
from gateway.providers.openai_responses import (
    TERMINAL_EVENTS,
    finish_reason_of,
    output_of,
    responses_params,
    usage_from_responses,
)
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
)


def new_id(prefix: str = "gw") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class OpenAIProvider:
    """One configured OpenAI endpoint (api.openai.com, a compatible server, or the emulator)."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        t = config.timeouts
        self._client = openai.AsyncOpenAI(
            api_key=config.api_key.get_secret_value() if config.api_key else "missing-key",
            base_url=config.base_url,
            max_retries=0,
            timeout=httpx2.Timeout(t.total, connect=t.connect, read=t.read),
            http_client=openai.DefaultAsyncHttpxClient(
                limits=httpx2.Limits(max_connections=config.max_connections, max_keepalive_connections=256),
            ),
        )

    async def aclose(self) -> None:
        await self._client.close()

    def _error(self, exc: BaseException, target: Target, **kw: Any) -> GatewayError:
        return map_openai_error(exc, provider=self.name, model=target.name, **kw)

    def _content_filtered(self, target: Target, usage: Usage) -> GatewayError:
        return GatewayError(
            ErrorKind.CONTENT_FILTERED,
            f"{self.name} stopped the answer: its content filter flagged it (finish_reason=content_filter)",
            provider=self.name, model=target.name, usage=usage, provider_code="content_filter", code="content_filter",
        )

    # -- chat ---------------------------------------------------------------------------------

    async def complete(self, request: ChatRequest, target: Target) -> ChatResponse:
        if target.entry.api == "responses":
            return await self._complete_responses(request, target)
        try:
            raw = await self._client.chat.completions.create(**chat_params(request, target, stream=False))
        except Exception as exc:
            raise self._error(exc, target) from None
        if not raw.choices:
            raise GatewayError(ErrorKind.INVALID_RESPONSE, f"{self.name} returned no choices",
                               provider=self.name, model=target.name, usage=usage_from_openai(raw.usage))
        choice = raw.choices[0]
        usage = usage_from_openai(raw.usage)
        finish = FINISH_REASONS.get(choice.finish_reason or "", "stop")
        if finish == "content_filter":
            raise self._content_filtered(target, usage)
        return ChatResponse(
            id=raw.id or new_id(), text=choice.message.content, tool_calls=tool_calls_from_openai(choice.message.tool_calls),
            finish_reason=finish, usage=usage, provider=self.name, model=target.name, upstream_model=raw.model or target.upstream,
            created=raw.created or int(time.time()),
        )

    async def _complete_responses(self, request: ChatRequest, target: Target) -> ChatResponse:
        try:
            raw = await self._client.responses.create(**responses_params(request, target, stream=False))
        except Exception as exc:
            raise self._error(exc, target) from None
        usage = usage_from_responses(raw.usage)
        if raw.status == "failed":
            message = getattr(raw.error, "message", None) or "response failed"
            raise GatewayError(ErrorKind.SERVER, f"{self.name}: {message}", provider=self.name, model=target.name, usage=usage)
        text, calls = output_of(raw)
        finish = finish_reason_of(raw, bool(calls))
        if finish == "content_filter":
            raise self._content_filtered(target, usage)
        return ChatResponse(
            id=raw.id or new_id(), text=text, tool_calls=calls, finish_reason=finish, usage=usage, provider=self.name,
            model=target.name, upstream_model=raw.model or target.upstream, created=int(raw.created_at or time.time()),
        )

    def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamEvent]:
        if target.entry.api == "responses":
            return self._stream_responses(request, target)
        return self._stream_chat(request, target)

    async def _stream_chat(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamEvent]:
        try:
            upstream = await self._client.chat.completions.create(**chat_params(request, target, stream=True))
        except Exception as exc:
            raise self._error(exc, target) from None
        finish: str | None = None
        usage: Usage | None = None
        deltas = 0
        try:
            yield StartEvent(id=new_id("chatcmpl"), provider=self.name, model=target.name, upstream_model=target.upstream)
            async for chunk in upstream:
                if chunk.usage is not None:
                    usage = usage_from_openai(chunk.usage)
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta is not None:
                        if delta.content:
                            deltas += 1
                            yield TextDelta(text=delta.content)
                        for call in delta.tool_calls or ():
                            deltas += 1
                            fn = call.function
                            yield ToolCallDelta(index=call.index, id=call.id, name=fn.name if fn else None,
                                                arguments=(fn.arguments or "") if fn else "")
                    if choice.finish_reason:
                        finish = FINISH_REASONS.get(choice.finish_reason, "stop")
        except Exception as exc:
            raise self._error(exc, target, started=True, usage=usage or Usage(output_tokens=deltas)) from None
        finally:
            await upstream.close()
        if finish is None or usage is None:
            missing = "finish_reason" if finish is None else "usage chunk"
            raise GatewayError(
                ErrorKind.TRUNCATED_STREAM,
                f"{self.name} stream ended without its terminal marker ({missing} missing) after {deltas} deltas",
                provider=self.name, model=target.name, usage=usage or Usage(output_tokens=deltas),
            )
        if finish == "content_filter":
            raise self._content_filtered(target, usage)
        yield FinishEvent(finish_reason=finish, usage=usage)  # type: ignore[arg-type]

    async def _stream_responses(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamEvent]:
        try:
            upstream = await self._client.responses.create(**responses_params(request, target, stream=True))
        except Exception as exc:
            raise self._error(exc, target) from None
        tool_index: dict[int, int] = {}
        terminal: Any = None
        deltas = 0
        try:
            yield StartEvent(id=new_id("resp"), provider=self.name, model=target.name, upstream_model=target.upstream)
            async for event in upstream:
                kind = event.type
                if kind == "response.output_text.delta":
                    deltas += 1
                    yield TextDelta(text=event.delta)
                elif kind == "response.output_item.added" and event.item.type == "function_call":
                    index = tool_index.setdefault(event.output_index, len(tool_index))
                    yield ToolCallDelta(index=index, id=event.item.call_id, name=event.item.name)
                elif kind == "response.function_call_arguments.delta":
                    deltas += 1
                    index = tool_index.setdefault(event.output_index, len(tool_index))
                    yield ToolCallDelta(index=index, arguments=event.delta)
                elif kind == "error":
                    raise openai.APIError(event.message or "stream error", request=None,  # type: ignore[arg-type]
                                          body={"type": event.code, "code": event.code, "message": event.message})
                elif kind in TERMINAL_EVENTS:
                    terminal = event.response
        except Exception as exc:
            raise self._error(exc, target, started=True, usage=Usage(output_tokens=deltas)) from None
        finally:
            await upstream.close()
        if terminal is None:
            raise GatewayError(
                ErrorKind.TRUNCATED_STREAM,
                f"{self.name} stream ended without response.completed/incomplete/failed after {deltas} deltas",
                provider=self.name, model=target.name, usage=Usage(output_tokens=deltas),
            )
        usage = usage_from_responses(terminal.usage)
        if terminal.status == "failed":
            message = getattr(terminal.error, "message", None) or "response failed"
            raise GatewayError(ErrorKind.TRUNCATED_STREAM, f"{self.name}: {message}", provider=self.name,
                               model=target.name, usage=usage)
        finish = finish_reason_of(terminal, bool(tool_index))
        if finish == "content_filter":
            raise self._content_filtered(target, usage)
        yield FinishEvent(finish_reason=finish, usage=usage)  # type: ignore[arg-type]

    # -- embeddings -----------------------------------------------------------------------------

    async def embed(self, request: EmbeddingsRequest, target: Target) -> EmbeddingsResponse:
        # encoding_format left unset: the SDK then asks for base64 and decodes it (the compact wire form)
        params: dict[str, Any] = {"model": target.upstream, "input": list(request.texts)}
        if request.dimensions is not None:
            params["dimensions"] = request.dimensions
        try:
            raw = await self._client.embeddings.create(**params)
        except Exception as exc:
            raise self._error(exc, target) from None
        vectors = tuple(tuple(d.embedding) for d in sorted(raw.data, key=lambda d: d.index))
        if len(vectors) != len(request.texts):
            raise GatewayError(ErrorKind.INVALID_RESPONSE,
                               f"{self.name} returned {len(vectors)} vectors for {len(request.texts)} inputs",
                               provider=self.name, model=target.name)
        prompt = raw.usage.prompt_tokens if raw.usage else 0
        return EmbeddingsResponse(
            vectors=vectors, dimensions=len(vectors[0]), model=target.name, upstream_model=raw.model or target.upstream,
            provider=self.name, usage=Usage(input_tokens=prompt),
        )
