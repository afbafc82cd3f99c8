"""The Bedrock adapter: Converse, ConverseStream, Titan v2 / Cohere v3 embeddings through boto3, off the loop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.config import Config

from gateway.config import BedrockRegion, ProviderConfig
from gateway.providers.base import Target, new_id, provider_error
from gateway.providers.bedrock_auth import region_session
from gateway.providers.bedrock_converse import (
    FILTERED,
    MALFORMED,
    STOP_REASONS,
    content_of,
    converse_args,
    unsupported_chat,
    usage_of,
)
from gateway.providers.bedrock_errors import map_bedrock_error
from gateway.providers.bedrock_families import family_of
from gateway.providers.forced_json import ToolBlocks, finish_of
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
    validation_error,
)
from gateway.tokens import estimate_text_tokens

COHERE_BATCH = 96
COHERE_INPUT_TYPES = {"document": "search_document", "query": "search_query", "classification": "classification",
                      "clustering": "clustering"}  # fmt: skip
TITAN_DIMENSIONS = (256, 512, 1024)


def _dimensions_problem(request: EmbeddingsRequest, target: Target) -> str | None:
    if request.dimensions is None:
        return None
    if target.upstream.startswith("cohere.embed"):
        return None if request.dimensions == 1024 else f"`{target.name}` returns 1024 dimensions only"
    if request.dimensions not in TITAN_DIMENSIONS:
        return f"`{target.name}` offers {', '.join(map(str, TITAN_DIMENSIONS))} dimensions"
    return None


class BedrockProvider:
    """bedrock-runtime in one region; blocking boto3 calls run in this provider's own thread pool."""

    def __init__(self, name: str, config: ProviderConfig, region: BedrockRegion) -> None:
        self.name = name
        self.region = region.name
        t = config.timeouts
        self.pool = ThreadPoolExecutor(max_workers=min(64, config.max_connections), thread_name_prefix=name)
        session = region_session(config, region, session_name="llm-gateway")
        self.client = session.client(
            "bedrock-runtime", region_name=region.name, endpoint_url=config.base_url or None,
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=t.connect, read_timeout=t.read,
                          max_pool_connections=min(64, config.max_connections)),
        )  # fmt: skip

    async def aclose(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _fail(
        self, kind: ErrorKind, message: str, target: Target, usage: Usage | None = None, **kw: Any
    ) -> GatewayError:
        return provider_error(self.name, kind, message, target, usage, **kw)

    async def _call(self, fn: Callable[..., Any], target: Target, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, lambda: fn(**kwargs))
        except Exception as exc:
            raise map_bedrock_error(exc, provider=self.name, model=target.name) from None

    def unsupported(self, request: ChatRequest | EmbeddingsRequest, target: Target) -> str | None:
        """Why this adapter cannot take `request` as sent: an image by URL or of another type; dimensions the
        embedding model does not offer."""
        if isinstance(request, ChatRequest):
            return unsupported_chat(request, target.upstream)
        return _dimensions_problem(request, target)

    def finish(self, stop_reason: str | None, target: Target, usage: Usage, json_mode: bool) -> FinishReason:
        if stop_reason in FILTERED:
            raise self._fail(ErrorKind.CONTENT_FILTERED, f"the answer was blocked (stopReason={stop_reason})",
                             target, usage, provider_code=stop_reason)  # fmt: skip
        if stop_reason in MALFORMED:
            raise self._fail(ErrorKind.INVALID_RESPONSE, f"stopReason={stop_reason}", target, usage)
        return finish_of(STOP_REASONS.get(stop_reason or "", "stop"), json_mode)

    def converse_args(self, request: ChatRequest, target: Target) -> dict[str, Any]:
        max_tokens = request.max_tokens or target.entry.max_output_tokens
        return converse_args(request, target.upstream, max_tokens, target.entry.guardrail)

    async def converse(self, target: Target, args: dict[str, Any]) -> dict[str, Any]:
        """One Converse call's answer, whole (botocore swallows a cut or malformed body: that is invalid)."""
        raw = await self._call(self.client.converse, target, **args)
        if "output" not in raw or "stopReason" not in raw:
            raise self._fail(ErrorKind.INVALID_RESPONSE, "the Converse answer came back incomplete", target, None)
        return raw  # type: ignore[no-any-return]

    async def complete(self, request: ChatRequest, target: Target) -> ChatResponse:
        raw = await self.converse(target, self.converse_args(request, target))
        usage = usage_of(raw.get("usage"))
        finish = self.finish(raw.get("stopReason"), target, usage, request.wants_json)
        text, calls = content_of(_blocks_of(raw), request.wants_json)
        request_id = (raw.get("ResponseMetadata") or {}).get("RequestId") or new_id("bedrock")
        return ChatResponse(
            id=request_id, text=text, tool_calls=calls, finish_reason=finish, usage=usage,
            provider=self.name, model=target.name, upstream_model=target.upstream, created=int(time.time()),
        )  # fmt: skip

    def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamEvent]:
        """ConverseStream; for a model that cannot stream tool use, one Converse call replayed as a stream."""
        args = self.converse_args(request, target)
        if "toolConfig" in args and not family_of(target.upstream).stream_tools:
            return drive(_ReplayedConverse(self, request, target, args), target)
        return drive(_ConverseStream(self, request, target, args), target)

    async def embed(self, request: EmbeddingsRequest, target: Target) -> EmbeddingsResponse:
        model = target.upstream
        if (problem := _dimensions_problem(request, target)) is not None:
            raise validation_error("dimensions", problem)
        if model.startswith("cohere.embed"):
            batches = [request.texts[i : i + COHERE_BATCH] for i in range(0, len(request.texts), COHERE_BATCH)]
            input_type = COHERE_INPUT_TYPES[request.input_type or "document"]
            bodies = [{"texts": list(b), "input_type": input_type, "embedding_types": ["float"]} for b in batches]
            results = await asyncio.gather(*(self._invoke(target, body) for body in bodies))
            vectors = [tuple(v) for body, _ in results for v in body["embeddings"]["float"]]
            tokens = sum(n for _, n in results)
        else:
            body = {"normalize": True, **({"dimensions": request.dimensions} if request.dimensions else {})}
            results = await asyncio.gather(*(self._invoke(target, {**body, "inputText": t}) for t in request.texts))
            vectors = [tuple(r["embedding"]) for r, _ in results]
            tokens = sum(r.get("inputTextTokenCount") or n for r, n in results)
        tokens = tokens or estimate_text_tokens(request.texts)  # never bill a call as 0
        return EmbeddingsResponse(
            vectors=tuple(vectors),
            dimensions=len(vectors[0]),
            model=target.name,
            upstream_model=model,
            provider=self.name,
            usage=Usage(input_tokens=tokens),
        )

    async def _invoke(self, target: Target, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        raw = await self._call(self.client.invoke_model, target, modelId=target.upstream, body=json.dumps(body),
                               contentType="application/json", accept="application/json")  # fmt: skip
        payload = await asyncio.get_running_loop().run_in_executor(self.pool, raw["body"].read)
        headers = (raw.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        return json.loads(payload), int(headers.get("x-amzn-bedrock-input-token-count") or 0)


def _blocks_of(raw: dict[str, Any]) -> list[dict[str, Any]]:
    return ((raw.get("output") or {}).get("message") or {}).get("content") or []


class _ConverseStream:
    """One ConverseStream call: boto3 reads the event stream in a worker thread of the adapter's pool and hands
    each event to the loop; they come out as translated deltas and terminal facts (see `drive`). Closing it
    closes the HTTP response, which unblocks the worker and ends the upstream call."""

    id_prefix, marker = "bedrock", "messageStop and metadata"

    def __init__(self, adapter: BedrockProvider, request: ChatRequest, target: Target, args: dict[str, Any]) -> None:
        self.name = adapter.name
        self._adapter, self._request, self._target, self._args = adapter, request, target, args
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._holder: dict[str, Any] = {}  # shared with the worker: the open stream, and "closed" once we are done
        self._blocks = ToolBlocks(request.wants_json)

    def _put(self, kind: str, item: Any) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, item))

    def _pump(self, args: dict[str, Any]) -> None:
        """Worker thread: open the stream and forward each event to the event loop."""
        holder = self._holder
        try:
            stream = self._adapter.client.converse_stream(**args)["stream"]
            holder["stream"] = stream
            self._put("open", None)
            for event in stream:
                if holder.get("closed"):
                    break
                self._put("event", event)
            self._put("end", None)
        except BaseException as exc:
            self._put("error", exc)
        finally:
            if (s := holder.get("stream")) is not None:
                s.close()

    async def open(self) -> None:
        self._loop.run_in_executor(self._adapter.pool, self._pump, self._args)
        kind, item = await self._queue.get()
        if kind == "error":
            raise item

    async def events(self) -> AsyncIterator[StreamEvent | Ending]:
        while True:
            kind, item = await self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            if (event := self._translate(item)) is not None:
                yield event

    def _translate(self, item: dict[str, Any]) -> StreamEvent | Ending | None:
        if "contentBlockDelta" in item:
            block = item["contentBlockDelta"]
            delta, index = block.get("delta") or {}, block.get("contentBlockIndex", 0)
            if "text" in delta:
                return TextDelta(text=delta["text"])
            if "toolUse" in delta:
                return self._blocks.piece(index, delta["toolUse"].get("input", ""))
        elif "contentBlockStart" in item:
            block = item["contentBlockStart"]
            use = (block.get("start") or {}).get("toolUse")
            if use is not None:
                return self._blocks.start(block.get("contentBlockIndex", 0), use.get("name"), use.get("toolUseId"))
        elif "messageStop" in item:
            return Ending(stop=item["messageStop"].get("stopReason"))
        elif "metadata" in item:
            return Ending(usage=usage_of(item["metadata"].get("usage")))
        return None

    def finish(self, stop: Any, usage: Usage) -> FinishReason:
        return self._adapter.finish(stop, self._target, usage, self._request.wants_json)

    def error(self, exc: BaseException, *, started: bool, usage: Usage | None) -> GatewayError:
        return map_bedrock_error(exc, provider=self.name, model=self._target.name, started=started, usage=usage)

    async def close(self) -> None:
        self._holder["closed"] = True
        if (s := self._holder.get("stream")) is not None:
            await self._loop.run_in_executor(None, s.close)  # unblocks the worker: the upstream call ends now


class _ReplayedConverse:
    """A model that cannot stream tool use (Llama, Mistral on Bedrock): one Converse call, its answer replayed as
    a stream — the text, each tool call whole, then its stop reason and usage."""

    id_prefix, marker = "bedrock", "a stop reason and usage"

    def __init__(self, adapter: BedrockProvider, request: ChatRequest, target: Target, args: dict[str, Any]) -> None:
        self.name = adapter.name
        self._adapter, self._request, self._target, self._args = adapter, request, target, args
        self._raw: dict[str, Any] = {}

    async def open(self) -> None:
        self._raw = await self._adapter.converse(self._target, self._args)

    async def events(self) -> AsyncIterator[StreamEvent | Ending]:
        text, calls = content_of(_blocks_of(self._raw), self._request.wants_json)
        if text:
            yield TextDelta(text=text)
        for index, call in enumerate(calls):
            yield ToolCallDelta(index=index, id=call.id, name=call.name, arguments=call.arguments)
        yield Ending(stop=self._raw.get("stopReason"), usage=usage_of(self._raw.get("usage")))

    def finish(self, stop: Any, usage: Usage) -> FinishReason:
        return self._adapter.finish(stop, self._target, usage, self._request.wants_json)

    def error(self, exc: BaseException, *, started: bool, usage: Usage | None) -> GatewayError:
        return map_bedrock_error(exc, provider=self.name, model=self._target.name, started=started, usage=usage)

    async def close(self) -> None:
        return None
