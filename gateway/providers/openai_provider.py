"""The OpenAI adapter: Chat Completions, Responses and Embeddings in the official SDK's wire format (retries off)."""

from __future__ import annotations

import base64
import sys
import time
from array import array
from collections.abc import AsyncIterator
from typing import Any

import openai

from gateway.config import ProviderConfig
from gateway.json_codec import loads
from gateway.providers.base import Target, new_id, provider_error
from gateway.providers.openai_chat import FINISH_REASONS, chat_params, tool_calls_from_openai, usage_from_openai
from gateway.providers.openai_errors import body_kind, map_openai_error
from gateway.providers.openai_responses import (
    TERMINAL_EVENTS,
    finish_reason_of,
    output_of,
    responses_params,
    responses_problem,
    usage_from_responses,
)
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
    ToolCallDelta,
    Usage,
)


class OpenAIProvider:
    """One configured OpenAI endpoint (api.openai.com, a compatible server, or the emulator)."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self._http = provider_http(openai, openai.AsyncOpenAI, config, name, map_openai_error)

    def unsupported(self, request: ChatRequest | EmbeddingsRequest, target: Target) -> str | None:
        """The Responses API has no stop sequences; everything else is taken as sent."""
        return responses_problem(request) if target.entry.api == "responses" else None

    async def aclose(self) -> None:
        await self._http.aclose()

    def _fail(
        self, kind: ErrorKind, message: str, target: Target, usage: Usage | None = None, **kw: Any
    ) -> GatewayError:
        return provider_error(self.name, kind, message, target, usage, **kw)

    def _content_filtered(self, target: Target, usage: Usage) -> GatewayError:
        return self._fail(
            ErrorKind.CONTENT_FILTERED,
            "its content filter stopped the answer (finish_reason=content_filter)",
            target,
            usage,
            provider_code="content_filter",
        )

    # -- chat ---------------------------------------------------------------------------------

    async def complete(self, request: ChatRequest, target: Target) -> ChatResponse:
        if target.entry.api == "responses":
            return await self._complete_responses(request, target)
        raw = await self._http.post_json("/chat/completions", chat_params(request, target, stream=False), target)
        usage = usage_from_openai(raw.get("usage"))
        choices = raw.get("choices") or ()
        if not choices:
            raise self._fail(ErrorKind.INVALID_RESPONSE, "the answer has no choices", target, usage)
        choice = choices[0]
        finish = self.chat_finish(choice.get("finish_reason"), target, usage)
        message = choice.get("message") or {}
        return ChatResponse(
            id=raw.get("id") or new_id(),
            text=message.get("content"),
            tool_calls=tool_calls_from_openai(message.get("tool_calls")),
            finish_reason=finish,
            usage=usage,
            provider=self.name,
            model=target.name,
            upstream_model=raw.get("model") or target.upstream,
            created=raw.get("created") or int(time.time()),
        )

    async def _complete_responses(self, request: ChatRequest, target: Target) -> ChatResponse:
        raw = await self._http.post_json("/responses", responses_params(request, target, stream=False), target)
        usage = usage_from_responses(raw.get("usage"))
        if raw.get("status") == "failed":
            raise self._fail(
                ErrorKind.SERVER, (raw.get("error") or {}).get("message") or "response failed", target, usage
            )
        text, calls = output_of(raw)
        finish = finish_reason_of(raw, bool(calls))
        if finish == "content_filter":
            raise self._content_filtered(target, usage)
        return ChatResponse(
            id=raw.get("id") or new_id(),
            text=text,
            tool_calls=calls,
            finish_reason=finish,
            usage=usage,
            provider=self.name,
            model=target.name,
            upstream_model=raw.get("model") or target.upstream,
            created=int(raw.get("created_at") or time.time()),
        )

    def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamEvent]:
        if target.entry.api == "responses":
            return drive(_ResponsesStream(self, request, target), target)
        return drive(_ChatStream(self, request, target), target)

    def chat_finish(self, finish_reason: str | None, target: Target, usage: Usage) -> FinishReason:
        """The normalized finish reason of a Chat Completions answer; its content filter is no answer."""
        finish = FINISH_REASONS.get(finish_reason or "", "stop")
        if finish == "content_filter":
            raise self._content_filtered(target, usage)
        return finish

    def responses_finish(self, terminal: dict[str, Any], target: Target, usage: Usage, has_calls: bool) -> FinishReason:
        """The normalized finish reason of a Responses answer; a failed response broke after it started."""
        if terminal.get("status") == "failed":
            message = (terminal.get("error") or {}).get("message") or "response failed"
            raise self._fail(ErrorKind.TRUNCATED_STREAM, message, target, usage)
        finish = finish_reason_of(terminal, has_calls)
        if finish == "content_filter":
            raise self._content_filtered(target, usage)
        return finish

    def stream_error(self, error: dict[str, Any], type_key: str, target: Target) -> GatewayError:
        """An error the server sent inside a stream, classified by its type (under `type_key`) and code."""
        code = error.get("code")
        return self._fail(body_kind(error.get(type_key), code), f"error inside the stream: {error.get('message')}",
                          target, provider_code=code)  # fmt: skip

    # -- embeddings -----------------------------------------------------------------------------

    async def embed(self, request: EmbeddingsRequest, target: Target) -> EmbeddingsResponse:
        # base64, as the SDK asks by default: the compact wire form, decoded here
        params: dict[str, Any] = {"model": target.upstream, "input": list(request.texts), "encoding_format": "base64"}
        if request.dimensions is not None:
            params["dimensions"] = request.dimensions
        raw = await self._http.post_json("/embeddings", params, target)
        try:
            vectors = _vectors(raw["data"])
        except (KeyError, TypeError, ValueError) as exc:
            problem = f"malformed embeddings: {type(exc).__name__}"
            raise self._fail(ErrorKind.INVALID_RESPONSE, problem, target) from None
        if len(vectors) != len(request.texts):
            raise self._fail(
                ErrorKind.INVALID_RESPONSE, f"{len(vectors)} vectors for {len(request.texts)} inputs", target
            )
        return EmbeddingsResponse(
            vectors=vectors,
            dimensions=len(vectors[0]),
            model=target.name,
            upstream_model=raw.get("model") or target.upstream,
            provider=self.name,
            usage=Usage(input_tokens=(raw.get("usage") or {}).get("prompt_tokens") or 0),
        )


def _vectors(data: list[dict[str, Any]]) -> tuple[tuple[float, ...], ...]:
    """The answer's vectors in input order; a base64 one is little-endian float32, a list is taken as it is."""
    return tuple(_vector(d["embedding"]) for d in sorted(data, key=lambda d: d["index"]))


def _vector(value: str | list[float]) -> tuple[float, ...]:
    if not isinstance(value, str):
        return tuple(float(x) for x in value)
    floats = array("f", base64.b64decode(value))
    if sys.byteorder == "big":
        floats.byteswap()
    return tuple(floats)


class _ChatStream:
    """One streamed Chat Completions call: SSE chunks in, translated deltas and terminal facts out (see `drive`)."""

    id_prefix, marker = "chatcmpl", "its terminal marker ([DONE], or a finish_reason and usage)"

    def __init__(self, adapter: OpenAIProvider, request: ChatRequest, target: Target) -> None:
        self.name = adapter.name
        self._adapter, self._request, self._target = adapter, request, target
        self._http = adapter._http
        self._upstream: Any = None

    async def open(self) -> None:
        params = chat_params(self._request, self._target, stream=True)
        self._upstream = await self._http.open_stream("/chat/completions", params, self._target)

    async def events(self) -> AsyncIterator[StreamEvent | Ending]:
        async for sse in self._http.events(self._upstream):
            if sse.data == "[DONE]":
                yield Ending(marker=True)
                return
            chunk = loads(sse.data)
            if isinstance(error := chunk.get("error"), dict):
                raise self._adapter.stream_error(error, "type", self._target)
            if chunk.get("usage"):
                yield Ending(usage=usage_from_openai(chunk["usage"]))
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    yield TextDelta(text=delta["content"])
                for call in delta.get("tool_calls") or ():
                    fn = call.get("function") or {}
                    yield ToolCallDelta(index=call.get("index", 0), id=call.get("id"), name=fn.get("name"),
                                        arguments=fn.get("arguments") or "")  # fmt: skip
                if choice.get("finish_reason"):
                    yield Ending(stop=choice["finish_reason"])

    def finish(self, stop: Any, usage: Usage) -> FinishReason:
        return self._adapter.chat_finish(stop, self._target, usage)

    def error(self, exc: BaseException, *, started: bool, usage: Usage | None) -> GatewayError:
        return self._http.error(exc, self._target, started=started, usage=usage)

    async def close(self) -> None:
        if self._upstream is not None:
            await self._http.close_stream(self._upstream)


class _ResponsesStream(_ChatStream):
    """One streamed Responses call: typed events in, translated deltas and the terminal response out."""

    id_prefix, marker = "resp", "response.completed/incomplete/failed"

    def __init__(self, adapter: OpenAIProvider, request: ChatRequest, target: Target) -> None:
        super().__init__(adapter, request, target)
        self._tools: dict[int, int] = {}  # output index -> tool call index

    async def open(self) -> None:
        params = responses_params(self._request, self._target, stream=True)
        self._upstream = await self._http.open_stream("/responses", params, self._target)

    async def events(self) -> AsyncIterator[StreamEvent | Ending]:
        async for sse in self._http.events(self._upstream):
            event = loads(sse.data)
            kind = event.get("type")
            if kind == "response.output_text.delta":
                yield TextDelta(text=event["delta"])
            elif kind == "response.output_item.added" and event["item"].get("type") == "function_call":
                index = self._tools.setdefault(event["output_index"], len(self._tools))
                yield ToolCallDelta(index=index, id=event["item"]["call_id"], name=event["item"]["name"])
            elif kind == "response.function_call_arguments.delta":
                index = self._tools.setdefault(event["output_index"], len(self._tools))
                yield ToolCallDelta(index=index, arguments=event["delta"])
            elif kind == "error":
                raise self._adapter.stream_error(event, "code", self._target)  # the Responses error event
            elif kind in TERMINAL_EVENTS:
                terminal = event["response"]
                yield Ending(stop=terminal, usage=usage_from_responses(terminal.get("usage")), marker=True)
                return

    def finish(self, stop: Any, usage: Usage) -> FinishReason:
        return self._adapter.responses_finish(stop, self._target, usage, bool(self._tools))
