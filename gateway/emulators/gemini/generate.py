"""`:generateContent` and `:streamGenerateContent`: the answer, usageMetadata, safety, the SSE stream, billing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.emulators.call import dumps, send_json, stream_response
from gateway.emulators.faults import Behaviour
from gateway.emulators.gemini.common import ERROR_MIDSTREAM, PROMPT_BLOCKED, GeminiCall
from gateway.emulators.gemini.contents import Parsed, is_thinking_model, parse_request, thought_signature
from gateway.emulators.gemini.wire import context_length_error, invalid, sse_event
from gateway.emulators.openai.generate import Output, generate
from gateway.emulators.openai.wire import OpenAIError
from gateway.emulators.streaming import StreamPlan, run_stream
from gateway.emulators.text import deltas_of

GEMINI_CHUNK_TOKENS = 4  # text tokens to a streamed chunk (the real API sends several, often many more)
FINISH = {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}
BLOCKED_RATINGS = [
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"},
]
MIDSTREAM_ERROR = {
    "error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}
}


@dataclass
class Answer:
    """One generated turn with the Gemini usage numbers."""

    parsed: Parsed
    out: Output
    cached: int
    thoughts: int
    safety: bool = False
    blocked: bool = False

    @property
    def prompt_tokens(self) -> int:
        return self.parsed.prompt.tokens

    @property
    def candidate_tokens(self) -> int:
        if self.safety or self.blocked:
            return 0
        return len(self.out.pieces) + sum(c.tokens for c in self.out.tool_calls)

    @property
    def finish(self) -> str:
        return "SAFETY" if self.safety else FINISH.get(self.out.finish, "STOP")


def usage(ans: Answer, candidates: int) -> dict[str, Any]:
    """usageMetadata; like the real API (proto3 JSON), zero counters are left out."""
    meta: dict[str, Any] = {"promptTokenCount": ans.prompt_tokens}
    if candidates:
        meta["candidatesTokenCount"] = candidates
    meta["totalTokenCount"] = ans.prompt_tokens + candidates + ans.thoughts
    if ans.cached:
        meta["cachedContentTokenCount"] = ans.cached
    meta["promptTokensDetails"] = ans.parsed.details()
    if ans.cached:
        meta["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": ans.cached}]
    if ans.thoughts:
        meta["thoughtsTokenCount"] = ans.thoughts
    return meta


def _cached_tokens(call: GeminiCall, parsed: Parsed) -> int:
    """Implicit caching: an identical systemInstruction of >= cache_min_tokens seen before is served from cache."""
    n = parsed.system_tokens
    if n < call.ctx.settings.cache_min_tokens:
        return 0
    key = "gemini\x00" + hashlib.sha256(f"{call.model}\x00{parsed.system_text}".encode()).hexdigest()
    if key in call.ctx.prompt_cache:
        return n
    call.ctx.prompt_cache.add(key)
    return 0


def answer(call: GeminiCall) -> Answer:
    thinking = is_thinking_model(call.model)
    parsed, budget = parse_request(call.body, thinking)
    window = call.ctx.settings.context_window
    if parsed.prompt.tokens > window:
        raise context_length_error(parsed.prompt.tokens, window)
    thoughts = call.ctx.settings.reasoning_tokens if thinking else 0
    if budget is not None:
        thoughts = min(thoughts, budget)
    req = parsed.request
    if req.max_tokens is not None:
        thoughts = min(thoughts, req.max_tokens)
        req.max_tokens -= thoughts  # thinking is spent from maxOutputTokens, as on the real API
    cached = _cached_tokens(call, parsed)
    try:
        out = generate(call, parsed.prompt, req, "contents")
    except OpenAIError as err:
        raise invalid(err.message) from err
    blocked = call.is_fault(PROMPT_BLOCKED)
    safety = call.behaviour is Behaviour.CONTENT_FILTER and not blocked
    return Answer(parsed, out, cached, thoughts, safety=safety, blocked=blocked)


class _Builder:
    def __init__(self, call: GeminiCall, ans: Answer) -> None:
        self.call, self.ans = call, ans
        self.signed = is_thinking_model(call.model)
        self.tail = {"modelVersion": call.model, "responseId": call.request_id}

    def function_part(self, i: int) -> dict[str, Any]:
        c = self.ans.out.tool_calls[i]
        args = json.loads(c.arguments)
        part: dict[str, Any] = {"functionCall": {"name": c.name, "args": args}}
        if self.signed:
            part["thoughtSignature"] = thought_signature(c.name, args)
        return part

    def parts(self) -> list[dict[str, Any]]:
        out = self.ans.out
        if out.tool_calls:
            return [self.function_part(i) for i in range(len(out.tool_calls))]
        return [{"text": out.text}] if out.text else []

    def candidate(self, parts: list[dict[str, Any]] | None, finish: bool) -> dict[str, Any]:
        content: dict[str, Any] = {"role": "model"}
        if parts:
            content["parts"] = parts
        cand: dict[str, Any] = {"content": content}
        if finish:
            cand["finishReason"] = self.ans.finish
            if self.ans.safety:
                cand["safetyRatings"] = BLOCKED_RATINGS
        cand["index"] = 0
        return cand

    def blocked(self) -> dict[str, Any]:
        feedback = {"blockReason": "SAFETY", "safetyRatings": BLOCKED_RATINGS}
        return {"promptFeedback": feedback, "usageMetadata": usage(self.ans, 0), **self.tail}

    def response(self) -> dict[str, Any]:
        if self.ans.blocked:
            return self.blocked()
        parts = None if self.ans.safety else self.parts()
        cand = self.candidate(parts, True)
        return {"candidates": [cand], "usageMetadata": usage(self.ans, self.ans.candidate_tokens), **self.tail}

    def chunk(self, parts: list[dict[str, Any]] | None, sent: int, finish: bool = False) -> dict[str, Any]:
        return {"candidates": [self.candidate(parts, finish)], "usageMetadata": usage(self.ans, sent), **self.tail}

    def plan(self, frame: Callable[[list[Any]], list[bytes]]) -> StreamPlan:
        """Content chunks (several tokens / one whole functionCall each, as the real API sends them), then a finish
        chunk with the final usage."""
        ans = self.ans
        content: list[tuple[Any, int]] = []
        sent = 0
        if ans.blocked:
            tail: list[Any] = [self.blocked()]
        elif ans.safety:
            tail = [self.chunk(None, 0, True)]
        else:
            for i, c in enumerate(ans.out.tool_calls):
                sent += c.tokens
                content.append((self.chunk([self.function_part(i)], sent), c.tokens))
            for group in deltas_of(ans.out.pieces, GEMINI_CHUNK_TOKENS):
                sent += len(group)
                content.append((self.chunk([{"text": "".join(group)}], sent), len(group)))
            tail = [self.chunk(None if ans.out.tool_calls else [{"text": ""}], sent, True)]
        events = frame([value for value, _ in content] + tail)
        plan = StreamPlan()
        plan.content = [(event, tokens) for event, (_, tokens) in zip(events, content, strict=False)]
        plan.tail = events[len(content) :]
        sse = frame is sse_frames
        if self.call.is_fault(ERROR_MIDSTREAM):
            error = dumps(MIDSTREAM_ERROR).encode()
            plan.malformed = sse_event(MIDSTREAM_ERROR) if sse else b",\r\n" + error + b"]"
        else:
            plan.malformed = b"data: {not json\r\n\r\n" if sse else b",\r\n{not json"
        return plan


def sse_frames(values: list[Any]) -> list[bytes]:
    return [sse_event(v) for v in values]


def array_frames(values: list[Any]) -> list[bytes]:
    """Without `alt=sse` the API streams one JSON array: `[{...}`, `,\\r\\n{...}`, …, `]`."""
    frames = [(b"[" if i == 0 else b",\r\n") + dumps(v).encode() for i, v in enumerate(values)]
    if frames:
        frames[-1] += b"]"
    return frames


async def generate_content(call: GeminiCall) -> web.StreamResponse:
    return await _respond(call, stream=False)


async def stream_generate_content(call: GeminiCall) -> web.StreamResponse:
    return await _respond(call, stream=True)


async def _respond(call: GeminiCall, stream: bool) -> web.StreamResponse:
    ans = answer(call)
    builder = _Builder(call, ans)
    if not stream:
        resp, outcome = await send_json(call, builder.response())
        output = ans.candidate_tokens + ans.thoughts
    else:
        sse = call.request.query.get("alt") == "sse"
        resp = stream_response(call)
        if not sse:
            resp.content_type = "application/json"
        plan = builder.plan(sse_frames if sse else array_frames)
        result = await run_stream(call.request, resp, plan, call.fault, call.timing, call.ctx.settings.stall_cap_s)
        outcome, output = result.outcome, ans.thoughts + result.sent_tokens
    if outcome == "malformed" and call.is_fault(ERROR_MIDSTREAM):
        outcome = "error-midstream"
    elif outcome == "ok" and ans.blocked:
        outcome = "prompt_blocked"
    elif outcome == "ok" and ans.safety:
        outcome = "safety"
    call.bill(ans.prompt_tokens, output, cached=ans.cached, reasoning=ans.thoughts, stream=stream, outcome=outcome)
    return resp
