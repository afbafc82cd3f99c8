"""`POST /chat/completions`: request parsing, the non-stream body and the chunk stream."""

from __future__ import annotations

import json
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
    content_tokens,
    generate,
    int_or_none,
    stop_list,
)
from gateway.emulators.openai.respond import respond
from gateway.emulators.openai.wire import OpenAIError, dumps, new_id, sse
from gateway.emulators.streaming import StreamPlan
from gateway.emulators.text import count_json_tokens, count_tokens

DONE = b"data: [DONE]\n\n"


def chat_prompt(messages: Any) -> Prompt:
    if not isinstance(messages, list) or not all(isinstance(m, Mapping) and m.get("role") for m in messages):
        raise OpenAIError(FaultKind.INVALID_REQUEST, "'messages' must be a list of objects with a 'role'.", "messages")
    prompt = Prompt()
    for message in messages:
        tokens, text = content_tokens(message.get("content"))
        prompt.tokens += tokens
        for tc in message.get("tool_calls") or []:
            fn = (tc.get("function") or {}) if isinstance(tc, Mapping) else {}
            prompt.tokens += count_tokens(str(fn.get("name", ""))) + count_tokens(str(fn.get("arguments", "")))
        role = message["role"]
        if role in ("system", "developer") and not prompt.system_text:
            prompt.system_text = text
        elif role == "user":
            prompt.user_text = text
    results: list[str] = []
    for message in reversed(messages):
        if message["role"] != "tool":
            break
        results.append(content_tokens(message.get("content"))[1])
    if results:
        prompt.tool_results = results[::-1]
    return prompt


def chat_request(body: Mapping[str, Any]) -> Request:
    tools = [
        Tool(str(t["function"].get("name", "")), t["function"].get("parameters"))
        for t in body.get("tools") or []
        if isinstance(t, Mapping) and t.get("type", "function") == "function" and isinstance(t.get("function"), Mapping)
    ]
    fmt = f if isinstance(f := body.get("response_format"), Mapping) else {}
    schema_spec = fmt.get("json_schema") if fmt.get("type") == "json_schema" else None
    max_tokens = body.get("max_completion_tokens")
    param = "max_completion_tokens" if max_tokens is not None else "max_tokens"
    return Request(
        tools=tools,
        tools_tokens=count_json_tokens(body["tools"]) if body.get("tools") else 0,
        tool_choice=body.get("tool_choice", "auto"),
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        max_tokens=int_or_none(max_tokens if max_tokens is not None else body.get("max_tokens"), param),
        stop=stop_list(body.get("stop")),
        json_mode=fmt.get("type") == "json_object",
        json_schema=(schema_spec.get("schema") or {}) if isinstance(schema_spec, Mapping) else None,
    )


def usage(out: Output) -> dict[str, Any]:
    return {
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens,
        "total_tokens": out.prompt_tokens + out.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": out.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": out.reasoning_tokens},
    }


def message(out: Output) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": None if out.tool_calls else out.text, "refusal": None}
    if out.tool_calls:
        msg["tool_calls"] = [
            {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in out.tool_calls
        ]
    return msg


def stream_plan(call: Call, out: Output, cid: str, created: int, include_usage: bool) -> StreamPlan:
    model = json.dumps(call.model)
    usage_null = ',"usage":null' if include_usage else ""
    lead = f'{{"id":"{cid}","object":"chat.completion.chunk","created":{created},"model":{model},'
    lead += '"choices":[{"index":0,"delta":'

    def chunk(delta_json: str, finish: str = "null") -> bytes:
        return f'data: {lead}{delta_json},"logprobs":null,"finish_reason":{finish}}}]{usage_null}}}\n\n'.encode()

    plan = StreamPlan()
    role: dict[str, Any] = {"role": "assistant", "content": None if out.tool_calls else ""}
    plan.head.append(chunk(dumps(role)))
    for piece in out.pieces:
        plan.content.append((chunk(f'{{"content":{json.dumps(piece)}}}'), 1))
    for i, c in enumerate(out.tool_calls):
        first = {"index": i, "id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": ""}}
        plan.content.append((chunk(dumps({"tool_calls": [first]})), 1))
        for piece in c.pieces:
            plan.content.append((chunk(dumps({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})), 1))
    plan.tail.append(chunk("{}", json.dumps(out.finish)))
    if include_usage:
        tail = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": call.model,
            "choices": [],
            "usage": usage(out),
        }
        plan.tail.append(sse(tail))
    plan.tail.append(DONE)
    plan.malformed = b"data: {not json\n\n"
    return plan


async def chat_completions(call: Call) -> web.StreamResponse:
    body = call.body
    out = generate(call, chat_prompt(body.get("messages")), chat_request(body), "messages")
    cid, created = new_id("chatcmpl-"), int(time.time())
    options = body.get("stream_options")
    include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
    payload = {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": call.model,
        "choices": [{"index": 0, "message": message(out), "logprobs": None, "finish_reason": out.finish}],
        "usage": usage(out),
        "system_fingerprint": None,
    }
    return await respond(
        call,
        out,
        bool(body.get("stream")),
        lambda: payload,
        lambda: stream_plan(call, out, cid, created, include_usage),
    )
