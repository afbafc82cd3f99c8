"""The providers the contract suite runs against: how to reach each one's emulator and what it can do."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from gateway.config import ModelEntry, ProviderConfig
from gateway.providers.base import Provider, Target
from gateway.providers.registry import build_provider
from gateway.schema import ErrorKind

ALL_CAPS = frozenset({"tools", "json", "images", "embeddings", "parallel_tools", "stop"})


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    path: str  # what the SDK's base URL is under the emulator
    model: str
    api: str = "chat"
    caps: frozenset[str] = ALL_CAPS
    embedding_model: str | None = None
    embedding_dims: int = 32
    sends_retry_after: bool = True  # Bedrock never sends Retry-After
    midstream_fault: str | None = None  # the provider's own in-stream error after content started
    safety_faults: tuple[str, ...] = ()  # the provider's own safety outcomes beyond `content-filter`
    fault_kinds: dict[str, ErrorKind] = field(default_factory=dict)  # where a provider differs from the default
    transport: str | None = None  # openai / anthropic: the lean transport unless "sdk"

    def provider(self, emulator_url: str, read_timeout: float = 1.0, headers: dict | None = None) -> Provider:
        config = ProviderConfig(
            kind=self.kind, base_url=emulator_url + self.path, api_key="sk-test", headers=headers or {},
            timeouts={"connect": 2, "read": read_timeout, "total": 10}, transport=self.transport,
            **({"regions": [{"name": "us-east-1"}], "aws_access_key_id": "test", "aws_secret_access_key": "test"}
               if self.kind == "bedrock" else {}),
        )  # fmt: skip
        return build_provider(self.id, config)

    def target(self, fault: str | None = None) -> Target:
        upstream = f"{self.model}-fault-{fault}" if fault else self.model
        return Target(upstream, self.id, ModelEntry(provider=self.id, upstream=upstream, api=self.api))

    def embedding_target(self) -> Target:
        assert self.embedding_model
        entry = ModelEntry(provider=self.id, upstream=self.embedding_model, kind="embedding")
        return Target(self.embedding_model, self.id, entry)

    def expected(self, fault: str, default: ErrorKind) -> ErrorKind:
        return self.fault_kinds.get(fault, default)


PRIMARY = [
    Case(
        "openai-chat",
        "openai",
        "/openai/v1",
        "gpt-4o-mini",
        embedding_model="text-embedding-3-small",
        caps=ALL_CAPS | {"auto_cache"},
    ),
    # the Responses API has no stop sequences
    Case(
        "openai-responses",
        "openai",
        "/openai/v1",
        "gpt-4.1-mini",
        api="responses",
        caps=ALL_CAPS - {"embeddings", "stop"},
    ),
    Case(
        "anthropic",
        "anthropic",
        "/anthropic",
        "claude-haiku-4-5",
        caps=ALL_CAPS - {"embeddings"},
        midstream_fault="overloaded-midstream",
    ),
    # a thinking model: thought signatures on tool calls, thought tokens in the usage
    Case(
        "gemini",
        "gemini",
        "/gemini/",
        "gemini-2.5-flash",
        embedding_model="gemini-embedding-001",
        caps=ALL_CAPS | {"reasoning", "auto_cache"},
        midstream_fault="error-midstream",
        safety_faults=("prompt-blocked",),
    ),
    Case(
        "bedrock",
        "bedrock",
        "/bedrock",
        "anthropic.claude-3-haiku-20240307-v1:0",
        embedding_model="amazon.titan-embed-text-v2:0",
        embedding_dims=256,
        sends_retry_after=False,
        midstream_fault="throttle-midstream",
        safety_faults=("guardrail",),
    ),
    # Llama and Mistral through the same Converse adapter: neither streams tool use (a streamed call with tools is
    # one Converse call replayed), Llama takes no forced tool choice (JSON mode plans around it), Mistral 7B takes
    # no system prompt (folded into the first user turn) and no tools
    *(
        Case(
            case_id,
            "bedrock",
            "/bedrock",
            model,
            caps=caps,
            sends_retry_after=False,
            midstream_fault="throttle-midstream",
            safety_faults=("guardrail",),
        )
        for case_id, model, caps in (
            ("bedrock-llama", "meta.llama3-1-8b-instruct-v1:0", ALL_CAPS - {"images", "embeddings", "json"}),
            ("bedrock-mistral-large", "mistral.mistral-large-2407-v1:0", ALL_CAPS - {"images", "embeddings"}),
            (
                "bedrock-mistral-7b",
                "mistral.mistral-7b-instruct-v0:2",
                ALL_CAPS - {"images", "embeddings", "json", "tools", "parallel_tools"},
            ),
        )
    ),
]
# The adapters with a lean transport run every case through it (above) and through their official SDK (here).
LEAN = ("openai", "anthropic")
CASES = [*PRIMARY, *(replace(c, id=f"{c.id}-sdk", transport="sdk") for c in PRIMARY if c.kind in LEAN)]
