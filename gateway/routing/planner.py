"""The route plan for one request: which catalog models to try, in order, and why (a pure function of the policy)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config import ModelEntry
from gateway.routing.policy import RoutingPolicy, Tier
from gateway.schema import ChatRequest, EmbeddingsRequest, ErrorKind, GatewayError
from gateway.tokens import estimate_tokens

AUTO = "auto"  # the model name that asks the policy to choose


@dataclass(frozen=True, slots=True)
class Candidate:
    model: str
    reason: str


@dataclass(frozen=True, slots=True)
class RoutePlan:
    task_class: str | None
    candidates: tuple[Candidate, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (model, why it cannot serve this request)
    kind: str = "chat"  # the catalog kind of every candidate

    @property
    def header(self) -> str:
        """`x-gateway-route`: the task class and the ordered candidates."""
        return f"{self.task_class or 'requested'}:" + ">".join(c.model for c in self.candidates)


def estimate_prompt_tokens(request: ChatRequest) -> int:
    """A cheap upper-ish estimate (~4 characters a token, tool schemas included); exact counts come with budgets."""
    chars = sum(len(m.text()) for m in request.messages) + sum(len(str(t.parameters)) for t in request.tools)
    return estimate_tokens(chars) + 4 * len(request.messages)


def infer_task_class(request: ChatRequest, policy: RoutingPolicy) -> tuple[str, str]:
    if request.metadata.task_class is not None:
        return request.metadata.task_class, "given"
    if request.tools or request.wants_json:
        return "code", "inferred: tools or JSON mode"
    if estimate_prompt_tokens(request) >= policy.long_context_tokens:
        return "planning", "inferred: long context"
    return policy.default_task_class, "default"


def _unfit(request: ChatRequest, entry: ModelEntry, prompt_tokens: int) -> str | None:
    caps = entry.capabilities
    if entry.kind != "chat":
        return "not a chat model"
    if request.has_images and not caps.images:
        return "no image input"
    if request.tools and not caps.tools:
        return "no tool calls"
    if request.wants_json and not caps.json_mode:
        return "no JSON mode"
    if request.stream and not caps.streaming:
        return "no streaming"
    if (
        request.max_tokens is not None
        and entry.max_output_tokens is not None
        and request.max_tokens > entry.max_output_tokens
    ):
        return f"max_tokens above its {entry.max_output_tokens} output tokens"
    if prompt_tokens + (request.max_tokens or 0) > entry.context_window:
        return f"context window {entry.context_window} < ~{prompt_tokens} prompt tokens + max_tokens"
    return None


def _tier(request: ChatRequest, policy: RoutingPolicy | None) -> Tier | None:
    name = request.metadata.budget_tier
    if name is None or policy is None or not policy.budget_tiers:
        return None
    if name not in policy.budget_tiers:
        known = ", ".join(sorted(policy.budget_tiers))
        raise GatewayError(ErrorKind.BAD_REQUEST, f"unknown budget tier `{name}` (known: {known})",
                           param="gateway.budget_tier")  # fmt: skip
    return policy.budget_tiers[name]


def plan_route(request: ChatRequest, policy: RoutingPolicy | None, catalog: Mapping[str, ModelEntry]) -> RoutePlan:
    """Requested model (then the request's own fallbacks), or for `auto` the task class's chain; unfit ones skipped."""
    org = policy.orgs.get(request.metadata.org or "") if policy is not None else None
    tier = _tier(request, policy)
    if request.model == AUTO:
        if policy is None:
            raise GatewayError(ErrorKind.BAD_REQUEST, "`auto` needs a routing policy (none is configured)",
                               param="model")  # fmt: skip
        task, why = infer_task_class(request, policy)
        chain = (
            (org.task_classes.get(task) if org else None)  # type: ignore[call-overload]
            or (tier.task_classes.get(task) if tier else None)  # type: ignore[call-overload]
            or policy.task_classes.get(task)  # type: ignore[call-overload]
        )
        if chain is None:
            raise GatewayError(ErrorKind.BAD_REQUEST, f"the routing policy has no chain for task class `{task}`",
                               param="gateway.task_class")  # fmt: skip
        names = [(m, f"{task} chain #{i + 1} ({why})") for i, m in enumerate(chain.candidates)]
    else:
        task = None
        names = [(request.model, "requested")]
    names += [(m, "requested fallback") for m in request.fallbacks]
    prompt_tokens = estimate_prompt_tokens(request)
    candidates: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    for name, reason in names:
        entry = catalog.get(name)
        if entry is None:
            if reason == "requested":
                message = f"model `{name}` is not in the catalog (GET /v1/models lists it)"
                raise GatewayError(ErrorKind.NOT_FOUND, message, code="model_not_found", param="model",
                                   fallbackable=False)  # fmt: skip
            skipped.append((name, "not in the catalog"))
        elif org is not None and ((org.allow is not None and name not in org.allow) or name in org.deny):
            skipped.append((name, f"not allowed for org `{request.metadata.org}`"))
        elif tier is not None and ((tier.allow is not None and name not in tier.allow) or name in tier.deny):
            skipped.append((name, f"not in budget tier `{request.metadata.budget_tier}`"))
        elif (problem := _unfit(request, entry, prompt_tokens)) is not None:
            skipped.append((name, problem))
        elif all(c.model != name for c in candidates):
            candidates.append(Candidate(name, reason))
    if not candidates:
        why = "; ".join(f"{m}: {r}" for m, r in skipped) or "no candidates"
        raise GatewayError(ErrorKind.BAD_REQUEST, f"no model can serve this request ({why})", param="model",
                           code="no_candidate")  # fmt: skip
    return RoutePlan(task, tuple(candidates), tuple(skipped))


def plan_embeddings(
    request: EmbeddingsRequest, policy: RoutingPolicy | None, catalog: Mapping[str, ModelEntry]
) -> RoutePlan:
    """`auto`: the embeddings chain (the policy orders it: Bedrock first, then the cheapest), keeping only models
    that can give the requested dimensions; a named model is used as is."""
    if request.model != AUTO:
        return RoutePlan(None, (Candidate(request.model, "requested"),), kind="embedding")
    chain = policy.task_classes.get("embeddings") if policy is not None else None
    if chain is None:
        raise GatewayError(ErrorKind.BAD_REQUEST, "`auto` needs a routing policy with an `embeddings` chain",
                           param="model")  # fmt: skip
    org = policy.orgs.get(request.metadata.org or "") if policy is not None else None
    candidates: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    for i, name in enumerate(chain.candidates):
        entry = catalog[name]
        if org is not None and ((org.allow is not None and name not in org.allow) or name in org.deny):
            skipped.append((name, f"not allowed for org `{request.metadata.org}`"))
        elif request.dimensions is not None and entry.dimensions is not None and entry.dimensions < request.dimensions:
            skipped.append((name, f"{entry.dimensions} dimensions < the {request.dimensions} requested"))
        else:
            candidates.append(Candidate(name, f"embeddings chain #{i + 1}"))
    if not candidates:
        why = "; ".join(f"{m}: {r}" for m, r in skipped)
        raise GatewayError(ErrorKind.BAD_REQUEST, f"no embedding model can serve this request ({why})",
                           param="dimensions", code="no_candidate")  # fmt: skip
    return RoutePlan("embeddings", tuple(candidates), tuple(skipped), kind="embedding")
