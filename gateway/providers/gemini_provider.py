"""The Gemini adapter: generateContent, streamGenerateContent and embeddings through the official google-genai SDK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from google import genai
from google.genai import types

from gateway.config import ProviderConfig
from gateway.providers.base import Target, new_id, provider_error
from gateway.providers.gemini_contents import BLOCKED, FINISH, config_of, contents_of, parts_of, usage_of
from gateway.providers.gemini_errors import map_gemini_error
from gateway.providers.stream_driver import Ending, drive
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
    UsageEvent,
)
from gateway.secrets.refs import value_of
from gateway.tokens import estimate_text_tokens

TASK_TYPES = {"document": "RETRIEVAL_DOCUMENT", "query": "RETRIEVAL_QUERY", "classification": "CLASSIFICATION",
              "clustering": "CLUSTERING"}  # fmt: skip


def _name(value: Any) -> str:
    return getattr(value, "value", None) or str(value or "")


class GeminiProvider:
    """One configured Gemini API endpoint (generativelanguage.googleapis.com or the emulator)."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        options: dict[str, Any] = {
            "api_version": "v1beta",
            "timeout": int(config.timeouts.total * 1000),
            # One attempt, and no hidden retry: without retry options the SDK's aiohttp path sleeps 1-10 s
            # and retries once on a connection error.
            "retry_options": types.HttpRetryOptions(attempts=1),
        }
        if config.base_url:
            options["base_url"] = config.base_url
        if config.headers:
            options["headers"] = dict(config.headers)
        self.read_timeout = config.timeouts.read  # the SDK has one total timeout; upstream silence is bounded here
        self.client = genai.Client(
            api_key=value_of(config.api_key) or "missing-key",
            http_options=types.HttpOptions(**options),
        )

    def unsupported(self, request: ChatRequest | EmbeddingsRequest, target: Target) -> str | None:
        """Nothing in the normalized schema is refused before the call (images by URL included)."""
        return None

    async def aclose(self) -> None:
        await self.client.aio.aclose()

    def _fail(
        self, kind: ErrorKind, message: str, target: Target, usage: Usage | None = None, **kw: Any
    ) -> GatewayError:
        return provider_error(self.name, kind, message, target, usage, **kw)

    def error(self, exc: BaseException, target: Target, **kw: Any) -> GatewayError:
        return map_gemini_error(exc, provider=self.name, model=target.name, **kw)

    def request_args(self, request: ChatRequest, target: Target) -> dict[str, Any]:
        system, contents = contents_of(request)
        config = config_of(request, request.max_tokens or target.entry.max_output_tokens)
        if system is not None:
            config["system_instruction"] = system
        return {"model": target.upstream, "contents": contents, "config": config}

    def check_blocked(self, response: Any, target: Target, usage: Usage) -> None:
        feedback = response.prompt_feedback
        if not response.candidates and feedback is not None and feedback.block_reason:
            raise self._fail(ErrorKind.CONTENT_FILTERED, f"the prompt was blocked ({_name(feedback.block_reason)})",
                             target, usage, provider_code=_name(feedback.block_reason))  # fmt: skip

    def finish(self, reason: Any, has_calls: bool, target: Target, usage: Usage) -> FinishReason:
        name = _name(reason)
        if name in BLOCKED:
            raise self._fail(ErrorKind.CONTENT_FILTERED, f"the answer was blocked (finishReason={name})", target,
                             usage, provider_code=name)  # fmt: skip
        if name == "MALFORMED_FUNCTION_CALL":
            raise self._fail(ErrorKind.INVALID_RESPONSE, "the model produced a malformed function call", target, usage)
        return "tool_calls" if has_calls and name in ("STOP", "") else FINISH.get(name, "stop")

    async def complete(self, request: ChatRequest, target: Target) -> ChatResponse:
        try:
            async with asyncio.timeout(self.read_timeout):
                raw = await self.client.aio.models.generate_content(**self.request_args(request, target))
        except Exception as exc:
            raise self.error(exc, target) from None
        usage = usage_of(raw.usage_metadata)
        self.check_blocked(raw, target, usage)
        if not raw.candidates:
            raise self._fail(ErrorKind.INVALID_RESPONSE, "the answer has no candidates", target, usage)
        texts, calls = parts_of(raw.candidates[0])
        finish = self.finish(raw.candidates[0].finish_reason, bool(calls), target, usage)
        return ChatResponse(
            id=raw.response_id or new_id("gemini"), text="".join(texts) if texts else None, tool_calls=tuple(calls),
            finish_reason=finish, usage=usage, provider=self.name, model=target.name,
            upstream_model=raw.model_version or target.upstream, created=int(time.time()),
        )  # fmt: skip

    def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamEvent]:
        return drive(_ContentStream(self, request, target), target)

    async def count_tokens(self, request: ChatRequest, target: Target) -> int:
        """The provider's own count of the prompt (`:countTokens`)."""
        args = self.request_args(request, target)
        try:
            async with asyncio.timeout(self.read_timeout):
                raw = await self.client.aio.models.count_tokens(model=args["model"], contents=args["contents"])
        except Exception as exc:
            raise self.error(exc, target) from None
        return int(raw.total_tokens or 0)

    async def embed(self, request: EmbeddingsRequest, target: Target) -> EmbeddingsResponse:
        config: types.EmbedContentConfigDict = {}
        if request.dimensions is not None:
            config["output_dimensionality"] = request.dimensions
        if request.input_type is not None:
            config["task_type"] = TASK_TYPES[request.input_type]
        try:
            async with asyncio.timeout(self.read_timeout):
                raw = await self.client.aio.models.embed_content(model=target.upstream, contents=list(request.texts),
                                                                  config=config or None)  # fmt: skip
        except Exception as exc:
            raise self.error(exc, target) from None
        vectors = tuple(tuple(e.values or ()) for e in raw.embeddings or ())
        if len(vectors) != len(request.texts) or not vectors[0]:
            raise self._fail(ErrorKind.INVALID_RESPONSE, f"{len(vectors)} vectors for {len(request.texts)} inputs",
                             target, None)  # fmt: skip
        estimate = estimate_text_tokens(request.texts)  # the Gemini API reports no token count for embeddings
        return EmbeddingsResponse(
            vectors=vectors, dimensions=len(vectors[0]), model=target.name, upstream_model=target.upstream,
            provider=self.name, usage=Usage(input_tokens=estimate),
        )  # fmt: skip


class _ContentStream:
    """One streamGenerateContent call: the SDK's chunks in, translated deltas and terminal facts out (see
    `drive`); each read is bounded by the read timeout (the SDK has only a total one)."""

    id_prefix, marker = "gemini", "a finishReason"

    def __init__(self, adapter: GeminiProvider, request: ChatRequest, target: Target) -> None:
        self.name = adapter.name
        self._adapter, self._request, self._target = adapter, request, target
        self._upstream: Any = None
        self._calls = 0
        self._prompt_sent = False

    async def open(self) -> None:
        args = self._adapter.request_args(self._request, self._target)
        async with asyncio.timeout(self._adapter.read_timeout):
            self._upstream = await self._adapter.client.aio.models.generate_content_stream(**args)

    async def events(self) -> AsyncIterator[StreamEvent | Ending]:
        while True:
            async with asyncio.timeout(self._adapter.read_timeout):
                try:
                    chunk = await anext(self._upstream)
                except StopAsyncIteration:
                    return
            usage = usage_of(chunk.usage_metadata) if chunk.usage_metadata is not None else None
            if usage is not None:
                if usage.input_tokens and not self._prompt_sent:
                    self._prompt_sent = True
                    yield UsageEvent(usage=usage)  # the prompt's count, before the output
                yield Ending(usage=usage)
            self._adapter.check_blocked(chunk, self._target, usage or Usage())
            for candidate in (chunk.candidates or ())[:1]:
                for event in self._deltas(candidate):
                    yield event

    def _deltas(self, candidate: Any) -> list[StreamEvent | Ending]:
        texts, found = parts_of(candidate, self._calls)
        out: list[StreamEvent | Ending] = [TextDelta(text=text) for text in texts]
        for call in found:
            out.append(ToolCallDelta(index=self._calls, id=call.id, name=call.name, arguments=call.arguments))
            self._calls += 1
        if candidate.finish_reason:
            out.append(Ending(stop=candidate.finish_reason, marker=True))  # Gemini's terminal marker
        return out

    def finish(self, stop: Any, usage: Usage) -> FinishReason:
        return self._adapter.finish(stop, self._calls > 0, self._target, usage)

    def error(self, exc: BaseException, *, started: bool, usage: Usage | None) -> GatewayError:
        return self._adapter.error(exc, self._target, started=started, usage=usage)

    async def close(self) -> None:
        if self._upstream is not None:
            await self._upstream.aclose()
