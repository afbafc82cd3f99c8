"""The OpenAI adapter: Chat Completions, Responses and Embeddings through the official SDK (retries off)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import openai

from gateway.config import ProviderConfig
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
)


class OpenAIProvider:
    """One configured OpenAI endpoint (api.openai.com, a compatible server, or the emulator)."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self._client = sdk_client(openai, openai.AsyncOpenAI, config)
        self._http = SdkHttp(self._client, name, map_openai_error)

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
        finish = FINISH_REASONS.get(choice.get("finish_reason") or "", "stop")
        if finish == "content_filter":
            raise self._content_filtered(target, usage)
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
            return self._stream_responses(request, target)
        return self._stream_chat(request, target)

    async def _stream_chat(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamEvent]:
        upstream = await self._http.open_stream("/chat/completions", chat_params(request, target, stream=True), target)
        finish: str | None = None
        usage: Usage | None = None
        done = False
        deltas = 0
        try:
            yield StartEvent(
                id=new_id("chatcmpl"), provider=self.name, model=target.name, upstream_model=target.upstream
            )
            async for sse in self._http.events(upstream):
                if sse.data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(sse.data)
                if "error" in chunk and isinstance(chunk["error"], dict):
                    error = chunk["error"]
                    kind = body_kind(error.get("type"), error.get("code"))
                    raise self._fail(
                        kind if kind is not ErrorKind.SERVER else ErrorKind.TRUNCATED_STREAM,
                        f"error inside the stream: {error.get('message')}",
                        target,
                        usage or Usage(output_tokens=deltas),
                        provider_code=error.get("code"),
                    )
                if chunk.get("usage"):
                    usage = usage_from_openai(chunk["usage"])
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        deltas += 1
                        yield TextDelta(text=delta["content"])
                    for call in delta.get("tool_calls") or ():
                        deltas += 1
                        fn = call.get("function") or {}
                        yield ToolCallDelta(
                            index=call.get("index", 0),
                            id=call.get("id"),
                            name=fn.get("name"),
                            arguments=fn.get("arguments") or "",
                        )
                    if choice.get("finish_reason"):
                        finish = FINISH_REASONS.get(choice["finish_reason"], "stop")
        except GatewayError:
            raise
        except Exception as exc:
            raise self._http.error(
                exc, target, started=deltas > 0, usage=usage or Usage(output_tokens=deltas)
            ) from None
        finally:
            await upstream.aclose()
        if finish is None or (not done and usage is None):  # finish and usage arrived: complete without [DONE]
            missing = "[DONE]" if finish is not None else "finish_reason"
            raise self._fail(
                ErrorKind.TRUNCATED_STREAM,
                f"the stream ended without its terminal marker ({missing} missing) after {deltas} deltas",
                target,
                usage or Usage(output_tokens=deltas),
            )
        if usage is None:  # include_usage was forced; a compatible server that ignores it still gets billed
            usage = Usage(output_tokens=deltas)
        if finish == "content_filter":
            raise self._content_filtered(target, usage)
        yield FinishEvent(finish_reason=finish, usage=usage)  # type: ignore[arg-type]

    async def _stream_responses(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamEvent]:
        upstream = await self._http.open_stream("/responses", responses_params(request, target, stream=True), target)
        tool_index: dict[int, int] = {}
        terminal: dict[str, Any] | None = None
        deltas = 0
        try:
            yield StartEvent(id=new_id("resp"), provider=self.name, model=target.name, upstream_model=target.upstream)
            async for sse in self._http.events(upstream):
                event = json.loads(sse.data)
                kind = event.get("type")
                if kind == "response.output_text.delta":
                    deltas += 1
                    yield TextDelta(text=event["delta"])
                elif kind == "response.output_item.added" and event["item"].get("type") == "function_call":
                    index = tool_index.setdefault(event["output_index"], len(tool_index))
                    yield ToolCallDelta(index=index, id=event["item"]["call_id"], name=event["item"]["name"])
                elif kind == "response.function_call_arguments.delta":
                    deltas += 1
                    index = tool_index.setdefault(event["output_index"], len(tool_index))
                    yield ToolCallDelta(index=index, arguments=event["delta"])
                elif kind == "error":
                    error_kind = body_kind(event.get("code"), event.get("code"))
                    raise self._fail(
                        error_kind if error_kind is not ErrorKind.SERVER else ErrorKind.TRUNCATED_STREAM,
                        f"error inside the stream: {event.get('message')}",
                        target,
                        Usage(output_tokens=deltas),
                        provider_code=event.get("code"),
                    )
                elif kind in TERMINAL_EVENTS:
                    terminal = event["response"]
                    break
        except GatewayError:
            raise
        except Exception as exc:
            raise self._http.error(exc, target, started=deltas > 0, usage=Usage(output_tokens=deltas)) from None
        finally:
            await upstream.aclose()
        if terminal is None:
            raise self._fail(
                ErrorKind.TRUNCATED_STREAM,
                f"the stream ended without response.completed/incomplete/failed after {deltas} deltas",
                target,
                Usage(output_tokens=deltas),
            )
        usage = usage_from_responses(terminal.get("usage"))
        if terminal.get("status") == "failed":
            message = (terminal.get("error") or {}).get("message") or "response failed"
            raise self._fail(ErrorKind.TRUNCATED_STREAM, message, target, usage)
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
            raise self._http.error(exc, target) from None
        vectors = tuple(tuple(d.embedding) for d in sorted(raw.data, key=lambda d: d.index))
        if len(vectors) != len(request.texts):
            raise self._fail(
                ErrorKind.INVALID_RESPONSE, f"{len(vectors)} vectors for {len(request.texts)} inputs", target
            )
        prompt = raw.usage.prompt_tokens if raw.usage else 0
        return EmbeddingsResponse(
            vectors=vectors,
            dimensions=len(vectors[0]),
            model=target.name,
            upstream_model=raw.model or target.upstream,
            provider=self.name,
            usage=Usage(input_tokens=prompt),
        )
