"""The safety policy (`policies/safety.yaml`): the guards, the profiles that put guards at stages, and which
profile a call gets (the first selector that matches its org, key, daemon and model)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.policy_files import load_policy_file
from gateway.safety.pii import ENTITIES
from gateway.schema.chat import GatewayMetadata

Stage = Literal["input", "output", "stream", "embeddings_input"]
STAGES: tuple[Stage, ...] = ("input", "output", "stream", "embeddings_input")
Action = Literal["redact", "block", "flag"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GuardSpec(_Strict):
    """One guard. `blocklist`: terms (whole words), phrases, regexes (they see normalized, case-folded text);
    `pii`: entity type -> redact / block / flag (no entities: every type, redacted); `http`: an external checker."""

    kind: Literal["blocklist", "pii", "http"]
    on_error: Literal["fail_closed", "fail_open"] = "fail_closed"
    timeout_ms: int = Field(default=1000, ge=1, le=60_000)
    action: Literal["block", "flag"] = "block"  # blocklist: what a match does
    terms: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()
    entities: dict[str, Action] = {}
    region: str = "US"  # pii: how phone numbers without a country code are read
    url: str | None = None  # http: POST {"guard", "stage", "texts"} -> {"verdict", "category", "reason", "texts"}

    @model_validator(mode="after")
    def _complete(self) -> GuardSpec:
        if self.kind == "blocklist":
            if not (self.terms or self.phrases or self.regexes):
                raise ValueError("a blocklist needs terms, phrases or regexes")
            for i, pattern in enumerate(self.regexes):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"regexes.{i}: not a valid regex ({exc})") from None
        unknown = sorted(set(self.entities) - set(ENTITIES))
        if unknown:
            raise ValueError(f"unknown PII entity `{unknown[0]}` (known: {', '.join(ENTITIES)})")
        if self.kind == "http" and not self.url:
            raise ValueError("an http guard needs `url`")
        return self

    @property
    def actions(self) -> dict[str, Action]:
        """PII: what each entity type gets (every type redacted when the policy names none)."""
        return dict(self.entities) if self.entities else dict.fromkeys(ENTITIES, "redact")


class Profile(_Strict):
    """Which guards run at each stage, in order."""

    input: tuple[str, ...] = ()
    output: tuple[str, ...] = ()
    stream: tuple[str, ...] = ()
    embeddings_input: tuple[str, ...] = ()

    def at(self, stage: Stage) -> tuple[str, ...]:
        return getattr(self, stage)  # type: ignore[no-any-return]


class Selector(_Strict):
    """A call matches when every field given matches (none given: every call)."""

    org: str | None = None
    key: str | None = None
    daemon: str | None = None
    model: str | None = None
    profile: str

    def matches(self, meta: GatewayMetadata, model: str) -> bool:
        key_id = meta.principal.key_id if meta.principal is not None else None
        wanted = ((self.org, meta.org), (self.key, key_id), (self.daemon, meta.daemon), (self.model, model))
        return all(want is None or want == got for want, got in wanted)


class SafetyPolicy(_Strict):
    guards: dict[str, GuardSpec] = {}
    profiles: dict[str, Profile] = {}
    select: tuple[Selector, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> SafetyPolicy:
        for name, profile in self.profiles.items():
            for stage in STAGES:
                for guard in profile.at(stage):
                    if guard not in self.guards:
                        raise ValueError(f"profiles.{name}.{stage}: unknown guard `{guard}`")
                    if stage == "stream" and self.guards[guard].kind == "http":
                        raise ValueError(f"profiles.{name}.stream: `{guard}` is an http guard, which checks whole "
                                         "texts (input, output, embeddings_input), not text as it streams")  # fmt: skip
        for i, selector in enumerate(self.select):
            if selector.profile not in self.profiles:
                raise ValueError(f"select.{i}.profile: unknown profile `{selector.profile}`")
        return self

    def profile_for(self, meta: GatewayMetadata, model: str) -> str | None:
        return next((s.profile for s in self.select if s.matches(meta, model)), None)


def load_safety(path: str | Path) -> SafetyPolicy:
    return load_policy_file(path, SafetyPolicy.model_validate)[0]
