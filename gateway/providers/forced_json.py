"""JSON mode as a forced tool call, for the APIs without a response format (Anthropic Messages, Bedrock
Converse): the tool's name and schema, and turning its input back into the answer's text."""

from __future__ import annotations

from typing import Any

from gateway.schema import ChatRequest, FinishReason, TextDelta, ToolCallDelta

JSON_TOOL = "json_response"
DESCRIPTION = "Reply with the JSON answer."


def json_schema_of(request: ChatRequest) -> dict[str, Any] | None:
    """The schema the forced tool takes as its input; None when the request does not ask for JSON."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    return fmt.json_schema if fmt.type == "json_schema" else {"type": "object"}


def is_answer(name: str | None, json_mode: bool) -> bool:
    """The tool call is the forced JSON tool: its input is the answer, not a call for the caller."""
    return json_mode and name == JSON_TOOL


def finish_of(finish: FinishReason, json_mode: bool) -> FinishReason:
    """In JSON mode the forced tool call is how the answer ends, so it ends as `stop`."""
    return "stop" if json_mode and finish == "tool_calls" else finish


class ToolBlocks:
    """One stream's tool-use content blocks: the forced JSON tool's input streams as text, other tools are
    numbered in the order they start."""

    __slots__ = ("_json", "_json_blocks", "_tools")

    def __init__(self, json_mode: bool) -> None:
        self._json = json_mode
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._json_blocks: set[int] = set()

    def start(self, block: int, name: str | None, call_id: str | None) -> ToolCallDelta | None:
        if is_answer(name, self._json):
            self._json_blocks.add(block)
            return None
        self._tools[block] = len(self._tools)
        return ToolCallDelta(index=self._tools[block], id=call_id, name=name)

    def piece(self, block: int, text: str) -> TextDelta | ToolCallDelta | None:
        if block in self._json_blocks:
            return TextDelta(text=text)
        if block in self._tools:
            return ToolCallDelta(index=self._tools[block], arguments=text)
        return None
