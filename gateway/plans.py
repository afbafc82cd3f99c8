"""A request's plan on this replica: the policy's route narrowed to the candidates the caller may use, that can
take the request as sent (each adapter says what it cannot), and whose calls can be priced."""

from __future__ import annotations

from dataclasses import replace

from gateway.auth.models import check_model, scope_plan
from gateway.config import ModelEntry
from gateway.control.replica import ReplicaControl
from gateway.pricing import Pricer
from gateway.providers import ProviderRegistry, Target
from gateway.routing.planner import AUTO, RoutePlan, plan_embeddings, plan_route
from gateway.schema import ChatRequest, EmbeddingsRequest, ErrorKind, GatewayError, validation_error


def check_capabilities(request: ChatRequest, target: Target) -> None:
    """Refuse a request the chosen model cannot serve, naming the field."""
    caps = target.entry.capabilities
    if request.has_images and not caps.images:
        raise validation_error("messages", f"model `{target.name}` does not accept image input")
    if request.tools and not caps.tools:
        raise validation_error("tools", f"model `{target.name}` does not support tool calls")
    if request.wants_json and not caps.json_mode:
        raise validation_error("response_format", f"model `{target.name}` does not support JSON mode")
    if request.stream and not caps.streaming:
        raise validation_error("stream", f"model `{target.name}` does not support streaming")
    limit = target.entry.max_output_tokens
    if limit is not None and request.max_tokens is not None and request.max_tokens > limit:
        raise validation_error(
            "max_tokens", f"{request.max_tokens} exceeds the {limit} output tokens of `{target.name}`"
        )


def check_dimensions(request: EmbeddingsRequest, target: Target) -> None:
    dims = target.entry.dimensions
    if request.dimensions is not None and dims is not None and request.dimensions > dims:
        raise validation_error("dimensions", f"{request.dimensions} exceeds the {dims} dimensions of `{target.name}`")


class Plans:
    """Plans requests against one replica's registry, pricer and current routing policy (no state of its own)."""

    def __init__(self, registry: ProviderRegistry, pricer: Pricer, control: ReplicaControl) -> None:
        self._registry, self._pricer, self._control = registry, pricer, control

    def chat(self, request: ChatRequest) -> RoutePlan:
        """The candidates to try, in order (a requested model's missing capability is named as a field error)."""
        principal = request.metadata.principal
        if request.model != AUTO:
            check_model(principal, request.model)
            check_capabilities(request, self._registry.target(request.model))
        plan = plan_route(request, self._control.policy, self._registry.catalog)
        return self._priced(self._takeable(request, scope_plan(principal, plan, request.model)))

    def embeddings(self, request: EmbeddingsRequest) -> RoutePlan:
        principal = request.metadata.principal
        if request.model != AUTO:
            check_model(principal, request.model)
            check_dimensions(request, self._registry.target(request.model, kind="embedding"))
        plan = plan_embeddings(request, self._control.policy, self._registry.catalog)
        return self._priced(self._takeable(request, scope_plan(principal, plan, request.model)))

    def entries(self, plan: RoutePlan) -> dict[str, ModelEntry]:
        return {c.model: self._registry.catalog[c.model] for c in plan.candidates}

    def servable(self, request: ChatRequest, names: tuple[str, ...]) -> dict[str, ModelEntry]:
        """Catalog models (by name, in order) that can serve `request` and have a price: a downgrade's targets."""
        out, principal = {}, request.metadata.principal
        for name in names:
            entry = self._registry.catalog.get(name)
            if entry is None or entry.kind != "chat" or (principal is not None and not principal.allows_model(name)):
                continue
            target = self._registry.target(name)
            try:
                check_capabilities(request, target)
            except GatewayError:
                continue
            if self._unsupported(request, target) is None and self._has_price(entry):
                out[name] = entry
        return out

    def _unsupported(self, request: ChatRequest | EmbeddingsRequest, target: Target) -> str | None:
        return self._registry.unsupported(request, target)

    def _has_price(self, entry: ModelEntry) -> bool:
        return self._pricer.has_price(self._registry.kind(entry.provider), entry.price_as or entry.upstream)

    def _takeable(self, request: ChatRequest | EmbeddingsRequest, plan: RoutePlan) -> RoutePlan:
        """Candidates whose adapter cannot take the request as sent (an image by URL on Bedrock, dimensions
        Titan does not offer, ...) are skipped with the adapter's reason, so another candidate serves it."""
        why = {c.model: self._unsupported(request, self._registry.target(c.model, plan.kind)) for c in plan.candidates}
        if request.model != AUTO and all(why.values()):
            return plan  # nothing else could serve it: the adapter's own refusal names the field
        return self._narrowed(plan, why, "no model can take this request as sent", "no_candidate")

    def _priced(self, plan: RoutePlan) -> RoutePlan:
        """Candidates whose calls cannot be charged are skipped: a call is never recorded as $0."""
        why = {c.model: None if self._has_price(self._registry.catalog[c.model])
               else "no known price (add it to the price table)" for c in plan.candidates}  # fmt: skip
        return self._narrowed(plan, why, "no model with a known price can serve this request", "model_unpriced")

    @staticmethod
    def _narrowed(plan: RoutePlan, why: dict[str, str | None], none_left: str, code: str) -> RoutePlan:
        if not any(why.values()):
            return plan
        keep = tuple(c for c in plan.candidates if why[c.model] is None)
        skipped = (*plan.skipped, *((m, r) for m, r in why.items() if r is not None))
        if not keep:
            reasons = "; ".join(f"{m}: {r}" for m, r in skipped)
            raise GatewayError(ErrorKind.BAD_REQUEST, f"{none_left} ({reasons})", param="model", code=code)
        return replace(plan, candidates=keep, skipped=skipped)
