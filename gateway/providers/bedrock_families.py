"""What each Bedrock model family takes through Converse (AWS's "Supported models and model features" table),
and what the adapter does about the rest: a system prompt folded into the first user turn, a non-streamed
answer replayed as a stream, tools and forced tool choices planned around (another candidate serves)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.schema import ChatRequest, NamedToolChoice

GEO_PREFIXES = ("us.", "eu.", "apac.", "us-gov.", "global.")  # cross-region inference profiles


@dataclass(frozen=True, slots=True)
class Family:
    system: bool = True  # takes a `system` field
    tools: bool = True  # takes a toolConfig
    stream_tools: bool = True  # takes a toolConfig in ConverseStream
    forced_tool: bool = True  # takes a toolChoice (`any`, `tool`): JSON mode and tool_choice required/named


FULL = Family()
_NO_TOOLS = Family(tools=False, stream_tools=False, forced_tool=False)
# Longest prefixes first; an unknown model is assumed to take everything (Bedrock then names what it refuses).
FAMILIES: tuple[tuple[str, Family], ...] = (
    ("anthropic.", FULL),
    ("amazon.nova", FULL),
    ("meta.llama3-1", Family(stream_tools=False, forced_tool=False)),
    ("meta.llama3-2", Family(stream_tools=False, forced_tool=False)),
    ("meta.llama3-3", Family(stream_tools=False, forced_tool=False)),
    ("meta.llama4", Family(stream_tools=False, forced_tool=False)),
    ("meta.", _NO_TOOLS),  # Llama 2 and 3.0
    ("mistral.mistral-large", Family(stream_tools=False)),
    ("mistral.mistral-small", Family(stream_tools=False, forced_tool=False)),
    ("mistral.", Family(system=False, tools=False, stream_tools=False, forced_tool=False)),  # 7B, Mixtral
    ("amazon.titan-text", Family(system=False, tools=False, stream_tools=False, forced_tool=False)),
)


def family_of(model_id: str) -> Family:
    for prefix in GEO_PREFIXES:
        model_id = model_id.removeprefix(prefix)
    return next((family for prefix, family in FAMILIES if model_id.startswith(prefix)), FULL)


def family_problem(request: ChatRequest, model_id: str) -> str | None:
    """Why `model_id` cannot take `request` through Converse (None: it can, adapted where needed)."""
    family = family_of(model_id)
    uses_tools = bool(request.tools) or any(m.tool_calls or m.role == "tool" for m in request.messages)
    if uses_tools and not family.tools:
        return f"`{model_id}` takes no tools on Bedrock"
    forced = request.wants_json or request.tool_choice == "required" or isinstance(request.tool_choice,
                                                                                   NamedToolChoice)  # fmt: skip
    if forced and not family.forced_tool:
        what = "JSON mode" if request.wants_json else "a required tool choice"
        return f"`{model_id}` cannot be made to call a tool on Bedrock ({what})"
    return None


def fold_system(system: list[dict[str, str]], messages: list[dict[str, object]]) -> None:
    """For a model without system prompts: the system text leads the first user turn instead."""
    first = messages[0]["content"] if messages else None
    if isinstance(first, list):
        first.insert(0, {"text": "\n\n".join(block["text"] for block in system)})
