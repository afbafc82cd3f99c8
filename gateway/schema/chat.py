"""The normalized chat request: messages, content parts, tools, output controls, gateway metadata."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.schema.principal import Daemon, Principal

Role = Literal["system", "user", "assistant", "tool"]
TaskClass = Literal["planning", "quick", "code", "embeddings"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TextPart(_Frozen):
    type: Literal["text"] = "text"
    text: str


class ImagePart(_Frozen):
    """An image given by URL or inline base64 data (exactly one of the two)."""

    type: Literal["image"] = "image"
    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: Literal["auto", "low", "high"] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ImagePart:
        if (self.url is None) == (self.data is None):
            raise ValueError("an image needs exactly one of `url` or `data`")
        if self.data is not None and not self.media_type:
            raise ValueError("inline image `data` needs a `media_type` such as image/png")
        return self


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


def arguments_problem(arguments: str) -> str | None:
    """Why tool-call `arguments` are not a JSON object's text (None: they are; empty means no arguments)."""
    if not arguments.strip():
        return None
    try:
        value = json.loads(arguments)
    except ValueError:
        return "must be the JSON text of an object (it is not valid JSON)"
    return None if isinstance(value, dict) else f"must be the JSON text of an object, not of a {type(value).__name__}"


class ToolCall(_Frozen):
    """A function call the model asked for; `arguments` is the JSON text of an object the model produced."""

    id: str
    name: str
    arguments: str = "{}"

    @field_validator("arguments")
    @classmethod
    def _an_object(cls, arguments: str) -> str:
        if (problem := arguments_problem(arguments)) is not None:
            raise ValueError(problem)
        return arguments


class Message(_Frozen):
    role: Role
    content: str | list[ContentPart] | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _role_rules(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs `tool_call_id`")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry `tool_calls`")
        if self.content is None and not self.tool_calls:
            raise ValueError("a message needs `content` (or `tool_calls` for an assistant message)")
        if self.role in ("system", "tool") and isinstance(self.content, list):
            if any(p.type != "text" for p in self.content):
                raise ValueError(f"a {self.role} message may contain text parts only")
        return self

    def text(self) -> str:
        """The text of this message, parts joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if p.type == "text")

    @property
    def has_image(self) -> bool:
        return isinstance(self.content, list) and any(p.type == "image" for p in self.content)


class ToolSpec(_Frozen):
    """A function the model may call, described by a JSON Schema for its arguments."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_is_object(self) -> ToolSpec:
        if self.parameters.get("type", "object") != "object":
            raise ValueError("tool `parameters` must be a JSON Schema of type object")
        return self


class NamedToolChoice(_Frozen):
    type: Literal["tool"] = "tool"
    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class ResponseFormat(_Frozen):
    """Plain text, any JSON object, or JSON matching `json_schema`."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict | None = None
    name: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and not self.json_schema:
            raise ValueError("response format `json_schema` needs a `json_schema`")
        return self


class CallBudget(_Frozen):
    """The caller's own limit for one call (`gateway.budget`): its cost and its tokens (input plus output).

    Enforced like a scoped budget: before the call (`refuse` with 402, or `shrink` max_tokens to what fits)
    and while it streams (cut with finish_reason `budget_exceeded`)."""

    max_cost_usd: Decimal | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, ge=1)
    on_exceed: Literal["refuse", "shrink"] = "refuse"

    @model_validator(mode="after")
    def _some_limit(self) -> CallBudget:
        if self.max_cost_usd is None and self.max_tokens is None:
            raise ValueError("a call budget needs `max_cost_usd` or `max_tokens`")
        return self


class GatewayMetadata(_Frozen):
    """Who is calling and why: drives routing, budgets and telemetry."""

    org: str | None = None
    user: str | None = None
    daemon: Daemon | None = None
    turn_id: str | None = None
    task_class: TaskClass | None = None
    latency_target_ms: int | None = Field(default=None, gt=0)
    budget_tier: str | None = None
    deadline: float | None = Field(default=None, gt=0)  # the turn's deadline, Unix seconds (shared by its calls)
    timeout_ms: int | None = Field(default=None, gt=0)  # or: this call's own time limit
    budget: CallBudget | None = None
    # Set by authentication only: a request that claims one is refused (gateway.auth.identity).
    principal: Principal | None = None


class ChatRequest(_Frozen):
    model: str = Field(min_length=1)
    messages: tuple[Message, ...] = Field(min_length=1)
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: tuple[str, ...] = Field(default=(), max_length=4)
    seed: int | None = None
    response_format: ResponseFormat | None = None
    fallbacks: tuple[str, ...] = Field(default=(), max_length=8)  # the caller's own backup models, in order
    stream: bool = False
    # the end user, as OpenAI's abuse detection sees them (the caller's own; else derived from the identity)
    safety_identifier: str | None = Field(default=None, min_length=1, max_length=64)
    metadata: GatewayMetadata = GatewayMetadata()

    @model_validator(mode="after")
    def _tools_consistent(self) -> ChatRequest:
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be unique")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.name not in names:
            raise ValueError(f"tool_choice names `{self.tool_choice.name}`, which is not among the tools")
        if self.tool_choice == "required" and not self.tools:
            raise ValueError("tool_choice `required` needs at least one tool")
        return self

    @property
    def has_images(self) -> bool:
        return any(m.has_image for m in self.messages)

    @property
    def wants_json(self) -> bool:
        return self.response_format is not None and self.response_format.type != "text"


def arguments_json(arguments: str) -> dict:
    """Parse tool-call arguments; an empty string means no arguments."""
    return json.loads(arguments) if arguments.strip() else {}
