"""The routing policy file: task classes with ordered candidate chains, org overrides, retry limits."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gateway.config import ConfigError, ModelEntry, TimeoutOverrides
from gateway.policy_files import load_policy_file
from gateway.schema.chat import TaskClass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Chain(_Strict):
    candidates: tuple[str, ...] = Field(min_length=1)
    timeouts: TimeoutOverrides = TimeoutOverrides()  # tighter bounds for this task class
    hedge: bool | None = None  # None: the policy's `hedging.enabled`


class OrgOverride(_Strict):
    """Per-org rules: its own chains, and models it may (allow) or may not (deny) use."""

    task_classes: dict[TaskClass, Chain] = {}
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()


class Tier(_Strict):
    """A budget tier (`gateway.budget_tier`): its own chains, and the models it may (allow) or may not (deny) use."""

    task_classes: dict[TaskClass, Chain] = {}
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()


class Retry(_Strict):
    per_candidate: int = Field(default=2, ge=1, le=10)  # attempts on one model before falling back
    total: int = Field(default=4, ge=1, le=20)  # attempts across the whole plan
    backoff_base_s: float = Field(default=0.2, ge=0)
    backoff_max_s: float = Field(default=2.0, ge=0)
    max_retry_after_s: float = Field(default=5.0, ge=0)  # a longer Retry-After falls back instead of waiting


class Breakers(_Strict):
    failure_threshold: int = Field(default=5, ge=1)  # consecutive health failures that open a breaker
    cooldown_s: float = Field(default=30.0, gt=0)  # how long it stays open before half-open probes
    half_open_probes: int = Field(default=1, ge=1)


class Hedging(_Strict):
    """Start the next candidate when the first token is later than the model's observed p95 time to first token."""

    enabled: bool = False
    min_samples: int = Field(default=20, ge=1)  # below this many observations there is no p95 to trust
    min_delay_ms: float = Field(default=50.0, ge=0)  # never hedge sooner than this


class Streaming(_Strict):
    """After the first byte reached the client a broken stream ends with an error, unless `continue_on_break`
    lets a prefill-capable candidate continue it from the text already sent."""

    continue_on_break: bool = False


class RoutingPolicy(_Strict):
    task_classes: dict[TaskClass, Chain]
    default_task_class: TaskClass = "quick"
    long_context_tokens: int = Field(default=32_000, ge=1)  # a prompt this long infers `planning`
    orgs: dict[str, OrgOverride] = {}
    budget_tiers: dict[str, Tier] = {}
    retry: Retry = Retry()
    breakers: Breakers = Breakers()
    hedging: Hedging = Hedging()
    streaming: Streaming = Streaming()
    deadline_s: float = Field(default=50.0, gt=0)  # a turn's end-to-end budget when the caller sends no deadline

    def check_models(self, catalog: Mapping[str, ModelEntry], source: str) -> None:
        """Unknown models, or a chat model in the embeddings chain (and vice versa), are load-time errors."""
        chains = [(f"task_classes.{k}", k, c) for k, c in self.task_classes.items()]
        for name, tier in self.budget_tiers.items():
            chains += [(f"budget_tiers.{name}.task_classes.{k}", k, c) for k, c in tier.task_classes.items()]
        for org, override in self.orgs.items():
            chains += [(f"orgs.{org}.task_classes.{k}", k, c) for k, c in override.task_classes.items()]
            for field in ("allow", "deny"):
                for model in getattr(override, field) or ():
                    if model not in catalog:
                        raise ConfigError(f"{source}: orgs.{org}.{field}: unknown model `{model}`")
        for name, tier in self.budget_tiers.items():
            for field in ("allow", "deny"):
                for model in getattr(tier, field) or ():
                    if model not in catalog:
                        raise ConfigError(f"{source}: budget_tiers.{name}.{field}: unknown model `{model}`")
        for where, task, chain in chains:
            for i, model in enumerate(chain.candidates):
                entry = catalog.get(model)
                if entry is None:
                    raise ConfigError(f"{source}: {where}.candidates.{i}: unknown model `{model}`")
                wanted = "embedding" if task == "embeddings" else "chat"
                if entry.kind != wanted:
                    raise ConfigError(f"{source}: {where}.candidates.{i}: `{model}` is not a {wanted} model")


def load_policy(path: str | Path, catalog: Mapping[str, ModelEntry]) -> RoutingPolicy:
    """Load and check a routing policy file (see `resolve_policy_path`)."""
    policy, file = load_policy_file(path, RoutingPolicy.model_validate)
    policy.check_models(catalog, str(file))
    return policy
