"""The Bedrock adapter: Converse, ConverseStream, Titan v2 / Cohere v3 embeddings through boto3, off the loop."""

from __future__ import annotations

import asyncio
import json
import math
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
    JSON_TOOL,
    MALFORMED,
    STOP_REASONS,
    content_of,
    converse_args,
    unsupported_chat,
    usage_of,
)
from gateway.providers.bedrock_errors import map_bedrock_error
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
    validation_error,
)

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
        self._pool = ThreadPoolExecutor(max_workers=min(64, config.max_connections), thread_name_prefix=name)
        session = region_session(config, region, session_name="llm-gateway")
        self._client = session.client(
            "bedrock-runtime", region_name=region.name, endpoint_url=config.base_url or None,
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=t.connect, read_timeout=t.read,
                          max_pool_connections=min(64, config.max_connections)),
        )  # fmt: skip

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _fail(
        self, kind: ErrorKind, message: str, target: Target, usage: Usage | None = None, **kw: Any
    ) -> GatewayError:
        return provider_error(self.name, kind, message, target, usage, **kw)

    async def _call(self, fn: Callable[..., Any], target: Target, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(**kwargs))
        except Exception as exc:
            raise map_bedrock_error(exc, provider=self.name, model=target.name) from None

    def unsupported(self, request: ChatRequest | EmbeddingsRequest, target: Target) -> str | None:
        """Why this adapter cannot take `request` as sent: an image by URL or of another type; dimensions the
        embedding model does not offer."""
        if isinstance(request, ChatRequest):
            return unsupported_chat(request)
        return _dimensions_problem(request, target)

    def _finish(self, stop_reason: str | None, target: Target, usage: Usage, json_mode: bool) -> str:
        if stop_reason in FILTERED:
            raise self._fail(ErrorKind.CONTENT_FILTERED, f"the answer was blocked (stopReason={stop_reason})",
                             target, usage, provider_code=stop_reason)  # fmt: skip
        if stop_reason in MALFORMED:
            raise self._fail(ErrorKind.INVALID_RESPONSE, f"stopReason={stop_reason}", target, usage)
        finish = STOP_REASONS.get(stop_reason or "", "stop")
        return "stop" if json_mode and finish == "tool_calls" else finish

    def _args(self, request: ChatRequest, target: Target) -> dict[str, Any]:
        max_tokens = request.max_tokens or target.entry.max_output_tokens
        return converse_args(request, target.upstream, max_tokens, target.entry.guardrail)

    async def complete(self, request: ChatRequest, target: Target) -> ChatResponse:
        raw = await self._call(self._client.converse, target, **self._args(request, target))
        if "output" not in raw or "stopReason" not in raw:  # botocore swallows a cut or malformed body
            raise self._fail(ErrorKind.INVALID_RESPONSE, "the Converse answer came back incomplete", target, None)
        usage = usage_of(raw.get("usage"))
        finish = self._finish(raw.get("stopReason"), target, usage, request.wants_json)
        blocks = ((raw.get("output") or {}).get("message") or {}).get("content") or []
        text, calls = content_of(blocks, request.wants_json)
        request_id = (raw.get("ResponseMetadata") or {}).get("RequestId") or new_id("bedrock")
        return ChatResponse(
            id=request_id, text=text, tool_calls=calls, finish_reason=finish, usage=usage,  # type: ignore[arg-type]
            provider=self.name, model=target.name, upstream_model=target.upstream, created=int(time.time()),
        )  # fmt: skip

    def _pump(self, args: dict[str, Any], put: Callable[[str, Any], None], holder: dict[str, Any]) -> None:
        """Worker thread: open the stream and forward each event to the event loop."""
        try:
            stream = self._client.converse_stream(**args)["stream"]
            holder["stream"] = stream
            put("open", None)
            for event in stream:
                if holder.get("closed"):
                    break
                put("event", event)
            put("end", None)
        except BaseException as exc:
            put("error", exc)
        finally:
            if (s := holder.get("stream")) is not None:
                s.close()

    async def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        holder: dict[str, Any] = {}
        put = lambda kind, item: loop.call_soon_threadsafe(queue.put_nowait, (kind, item))  # noqa: E731
        loop.run_in_executor(self._pool, self._pump, self._args(request, target), put, holder)
        kind, item = await queue.get()
        if kind == "error":
            raise map_bedrock_error(item, provider=self.name, model=target.name)
        json_mode = request.wants_json
        tools: dict[int, int] = {}
        json_blocks: set[int] = set()
        stop_reason: str | None = None
        usage: Usage | None = None
        deltas = 0
        try:
            yield StartEvent(
                id=new_id("bedrock"), provider=self.name, model=target.name, upstream_model=target.upstream
            )
            while True:
                kind, item = await queue.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise map_bedrock_error(item, provider=self.name, model=target.name, started=deltas > 0,
                                            usage=usage or Usage(output_tokens=deltas))  # fmt: skip
                if "contentBlockDelta" in item:
                    block = item["contentBlockDelta"]
                    delta, index = block.get("delta") or {}, block.get("contentBlockIndex", 0)
                    if "text" in delta:
                        deltas += 1
                        yield TextDelta(text=delta["text"])
                    elif "toolUse" in delta:
                        deltas += 1
                        piece = delta["toolUse"].get("input", "")
                        if index in json_blocks:
                            yield TextDelta(text=piece)
                        elif index in tools:
                            yield ToolCallDelta(index=tools[index], arguments=piece)
                elif "contentBlockStart" in item:
                    block = item["contentBlockStart"]
                    use = (block.get("start") or {}).get("toolUse")
                    if use is not None:
                        index = block.get("contentBlockIndex", 0)
                        if json_mode and use.get("name") == JSON_TOOL:
                            json_blocks.add(index)
                        else:
                            tools[index] = len(tools)
                            yield ToolCallDelta(index=tools[index], id=use.get("toolUseId"), name=use.get("name"))
                elif "messageStop" in item:
                    stop_reason = item["messageStop"].get("stopReason")
                elif "metadata" in item:
                    usage = usage_of(item["metadata"].get("usage"))
        finally:
            holder["closed"] = True
            if (s := holder.get("stream")) is not None:
                await loop.run_in_executor(None, s.close)  # unblocks the worker: the upstream call ends now
        final = usage or Usage(output_tokens=deltas)
        if stop_reason is None or usage is None:
            missing = "messageStop" if stop_reason is None else "metadata"
            raise self._fail(ErrorKind.TRUNCATED_STREAM, f"the stream ended without {missing} after {deltas} deltas",
                             target, final)  # fmt: skip
        yield FinishEvent(finish_reason=self._finish(stop_reason, target, final, json_mode), usage=final)  # type: ignore[arg-type]

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
        tokens = tokens or sum(max(1, math.ceil(len(t) / 4)) for t in request.texts)  # never bill a call as 0
        return EmbeddingsResponse(
            vectors=tuple(vectors),
            dimensions=len(vectors[0]),
            model=target.name,
            upstream_model=model,
            provider=self.name,
            usage=Usage(input_tokens=tokens),
        )

    async def _invoke(self, target: Target, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        raw = await self._call(self._client.invoke_model, target, modelId=target.upstream, body=json.dumps(body),
                               contentType="application/json", accept="application/json")  # fmt: skip
        payload = await asyncio.get_running_loop().run_in_executor(self._pool, raw["body"].read)
        headers = (raw.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        return json.loads(payload), int(headers.get("x-amzn-bedrock-input-token-count") or 0)
