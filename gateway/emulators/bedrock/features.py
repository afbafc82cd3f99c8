"""What each Bedrock model family takes in Converse, after AWS's "Supported models and model features" table:
system prompts, tool use, tool use while streaming, a forced tool choice. The emulator refuses the rest the
way Bedrock does (a ValidationException naming what the model does not support)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.emulators.bedrock.wire import validation

GEO_PREFIXES = ("us.", "eu.", "apac.", "us-gov.", "global.")  # cross-region inference profiles


@dataclass(frozen=True)
class Features:
    system: bool = True
    tools: bool = True
    stream_tools: bool = True
    tool_choice: bool = True  # toolChoice `any` / `tool` (Anthropic, Nova and Mistral Large only)


ALL = Features()
FAMILIES: tuple[tuple[str, Features], ...] = (
    ("anthropic.", ALL),
    ("amazon.nova", ALL),
    ("meta.llama3-1", Features(stream_tools=False, tool_choice=False)),
    ("meta.llama3-2", Features(stream_tools=False, tool_choice=False)),
    ("meta.llama3-3", Features(stream_tools=False, tool_choice=False)),
    ("meta.llama4", Features(stream_tools=False, tool_choice=False)),
    ("meta.", Features(tools=False, stream_tools=False, tool_choice=False)),  # Llama 2 and 3.0
    ("mistral.mistral-large", Features(stream_tools=False)),
    ("mistral.mistral-small", Features(stream_tools=False, tool_choice=False)),
    ("mistral.", Features(system=False, tools=False, stream_tools=False, tool_choice=False)),  # 7B, Mixtral
    ("amazon.titan-text", Features(system=False, tools=False, stream_tools=False, tool_choice=False)),
)


def features_of(model_id: str) -> Features:
    for prefix in GEO_PREFIXES:
        model_id = model_id.removeprefix(prefix)
    return next((f for prefix, f in FAMILIES if model_id.startswith(prefix)), ALL)


def check_features(model_id: str, body: Mapping[str, Any], stream: bool) -> None:
    """Refuse what `model_id` cannot take, with Bedrock's own wording."""
    features = features_of(model_id)
    if body.get("system") and not features.system:
        raise validation("This model doesn't support system messages. Try again without a system prompt.")
    tool_config = body.get("toolConfig")
    if not isinstance(tool_config, Mapping):
        return
    if not features.tools:
        raise validation("This model doesn't support tool use.")
    if stream and not features.stream_tools:
        raise validation("This model doesn't support tool use in streaming mode.")
    choice = tool_config.get("toolChoice")
    if isinstance(choice, Mapping) and not features.tool_choice:
        field = next(iter(choice), "auto")
        raise validation(f"This model doesn't support the toolConfig.toolChoice.{field} field. "
                         f"Remove toolConfig.toolChoice.{field} and try again.")  # fmt: skip
