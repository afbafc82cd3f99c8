"""`POST /responses`: input parsing, the response object and the typed SSE event stream."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.emulators.faults import FaultKind
from gateway.emulators.openai.common import Call
from gateway.emulators.openai.generate import (
    Output,
    Prompt,
    Request,
    Tool,
    ToolCall,
    content_tokens,
    generate,
    int_or_none,
)
from gateway.emulators.openai.respond import respond
from gateway.emulators.openai.wire import OpenAIError, dumps, new_id
from gateway.emulators.streaming import StreamPlan
from gateway.emulators.text import count_json_tokens, count_tokens

INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def responses_prompt(body: Mapping[str, Any]) -> Prompt:
    prompt = Prompt()
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        prompt.tokens += count_tokens(instructions)
        prompt.system_text = instructions
    raw = body.get("input")
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise OpenAIError(FaultKind.INVALID_REQUEST, "'input' must be a string or a list of items.", "input")
    results: list[str] = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type", "message")
        if kind == "function_call_output":
            tokens, text = content_tokens(item.get("output"))
            results.append(text)
        elif kind == "function_call":
            tokens = count_tokens(str(item.get("name", ""))) + count_tokens(str(item.get("arguments", "")))
            results = []
        elif kind == "message":
            tokens, text = content_tokens(item.get("content"))
            role = item.get("role")
            if role in ("system", "developer") and not prompt.system_text:
                prompt.system_text = text
            elif role == "user":
                prompt.user_text = text
            results = []
        else:
            tokens = 0
        prompt.tokens += tokens
    prompt.tool_results = results or None
    return prompt


def responses_request(body: Mapping[str, Any]) -> Request:
    tools = [
        Tool(str(t.get("name", "")), t.get("parameters"))
        for t in body.get("tools") or []
        if isinstance(t, Mapping) and t.get("type") == "function"
    ]
    text = tx if isinstance(tx := body.get("text"), Mapping) else {}
    fmt = f if isinstance(f := text.get("format"), Mapping) else {}
    return Request(
        tools=tools,
        tools_tokens=count_json_tokens(body["tools"]) if body.get("tools") else 0,
        tool_choice=body.get("tool_choice", "auto"),
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        max_tokens=int_or_none(body.get("max_output_tokens"), "max_output_tokens"),
        json_mode=fmt.get("type") == "json_object",
        json_schema=(fmt.get("schema") or {}) if fmt.get("type") == "json_schema" else None,
    )


def usage(out: Output) -> dict[str, Any]:
    return {
        "input_tokens": out.prompt_tokens,
        "input_tokens_details": {"cached_tokens": out.cached_tokens},
        "output_tokens": out.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": out.reasoning_tokens},
        "total_tokens": out.prompt_tokens + out.completion_tokens,
    }


class _Builder:
    """Builds the response object, its output items and the stream events of one call."""

    def __init__(self, call: Call, out: Output) -> None:
        self.call, self.out = call, out
        self.rid, self.created = new_id("resp_"), int(time.time())
        self.msg_id = new_id("msg_")
        self.fc_ids = [new_id("fc_") for _ in out.tool_calls]
        self.reason = INCOMPLETE_REASONS.get(out.finish)
        self.seq = 0

    def message_item(self, text: str | None, status: str) -> dict[str, Any]:
        content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
        return {"type": "message", "id": self.msg_id, "status": status, "role": "assistant", "content": content}

    def call_item(self, i: int, arguments: str, status: str) -> dict[str, Any]:
        c = self.out.tool_calls[i]
        return {
            "type": "function_call",
            "id": self.fc_ids[i],
            "call_id": c.call_id,
            "name": c.name,
            "arguments": arguments,
            "status": status,
        }

    def output(self) -> list[dict[str, Any]]:
        if self.out.tool_calls:
            return [self.call_item(i, c.arguments, "completed") for i, c in enumerate(self.out.tool_calls)]
        return [self.message_item(self.out.text, "incomplete" if self.reason else "completed")]

    def response(self, final: bool) -> dict[str, Any]:
        body = self.call.body
        status = ("incomplete" if self.reason else "completed") if final else "in_progress"
        return {
            "id": self.rid,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.call.model,
            "output": self.output() if final else [],
            "usage": usage(self.out) if final else None,
            "error": None,
            "incomplete_details": {"reason": self.reason} if final and self.reason else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "text": body.get("text") or {"format": {"type": "text"}},
            "metadata": body.get("metadata") or {},
            "previous_response_id": body.get("previous_response_id"),
            "truncation": "disabled",
        }

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return f"event: {kind}\ndata: {dumps(payload)}\n\n".encode()

    def call_events(self, i: int, c: ToolCall) -> list[tuple[bytes, int]]:
        """Stream events of one function call, each with the output tokens it carries (name = 1)."""
        ev, ids = self.event, {"item_id": self.fc_ids[i], "output_index": i}
        events = [(ev("response.output_item.added", output_index=i, item=self.call_item(i, "", "in_progress")), 1)]
        events += [(ev("response.function_call_arguments.delta", **ids, delta=p), 1) for p in c.pieces]
        done = ev("response.function_call_arguments.done", **ids, arguments=c.arguments, name=c.name)
        item = self.call_item(i, c.arguments, "completed")
        return [*events, (done, 0), (ev("response.output_item.done", output_index=i, item=item), 0)]

    def plan(self) -> StreamPlan:
        ev, out = self.event, self.out
        plan = StreamPlan(malformed=b"event: response.output_text.delta\ndata: {not json\n\n")
        plan.preamble = [
            ev("response.created", response=self.response(False)),
            ev("response.in_progress", response=self.response(False)),
        ]
        for i, c in enumerate(out.tool_calls):
            plan.content += self.call_events(i, c)
        if not out.tool_calls:
            ids = {"item_id": self.msg_id, "output_index": 0, "content_index": 0}
            part = {"type": "output_text", "text": "", "annotations": []}
            plan.head = [
                ev("response.output_item.added", output_index=0, item=self.message_item(None, "in_progress")),
                ev("response.content_part.added", **ids, part=part),
            ]
            plan.content = [(ev("response.output_text.delta", **ids, delta=p, logprobs=[]), 1) for p in out.pieces]
            plan.tail = [
                ev("response.output_text.done", **ids, text=out.text, logprobs=[]),
                ev("response.content_part.done", **ids, part={**part, "text": out.text}),
                ev("response.output_item.done", output_index=0, item=self.output()[0]),
            ]
        terminal = "response.incomplete" if self.reason else "response.completed"
        plan.tail.append(ev(terminal, response=self.response(True)))
        return plan


async def create_response(call: Call) -> web.StreamResponse:
    body = call.body
    out = generate(call, responses_prompt(body), responses_request(body), "input")
    builder = _Builder(call, out)
    return await respond(call, out, bool(body.get("stream")), lambda: builder.response(True), builder.plan)
