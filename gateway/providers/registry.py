"""Builds the provider adapters named in the configuration and resolves public model names to targets."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from gateway.config import BedrockRegion, GatewayConfig, ModelEntry, ProviderConfig, SecretsConfig, Timeouts
from gateway.providers.anthropic_provider import AnthropicProvider
from gateway.providers.base import Provider, Target
from gateway.providers.bedrock_provider import BedrockProvider
from gateway.providers.gemini_provider import GeminiProvider
from gateway.providers.openai_provider import OpenAIProvider
from gateway.providers.rotating import Build, rotating
from gateway.schema import ChatRequest, EmbeddingsRequest, ErrorKind, GatewayError
from gateway.secrets.resolver import SecretResolver, rotates, with_values


def build_providers(name: str, config: ProviderConfig, resolver: SecretResolver | None = None) -> dict[str, Provider]:
    """The adapters of one configured provider: one, or for Bedrock one per region, named `name@region`.
    Credentials are resolved by `resolver` (default: the default `secrets` settings); adapters of a provider with
    an AWS secret re-read it on an auth error (RotatingProvider)."""
    resolver = resolver or SecretResolver(SecretsConfig())
    builds = _builds(name, config)
    if rotates(config):
        return {n: rotating(config, b, resolver) for n, b in builds.items()}
    resolved = with_values(config, resolver)
    return {n: b(resolved) for n, b in builds.items()}


def _builds(name: str, config: ProviderConfig) -> dict[str, Build]:
    """Per adapter name, how to build it from a resolved config."""
    if config.kind == "openai":
        return {name: partial(OpenAIProvider, name)}
    if config.kind == "anthropic":
        return {name: partial(AnthropicProvider, name)}
    if config.kind == "gemini":
        return {name: partial(GeminiProvider, name)}
    if config.kind == "bedrock":
        return {f"{name}@{r.name}": partial(_bedrock, f"{name}@{r.name}", r) for r in config.regions}
    raise ValueError(f"providers.{name}.kind: unsupported provider kind `{config.kind}`")


def _bedrock(name: str, region: BedrockRegion, config: ProviderConfig) -> Provider:
    return BedrockProvider(name, config, region)


def build_provider(name: str, config: ProviderConfig, resolver: SecretResolver | None = None) -> Provider:
    """The preferred adapter of one configured provider (for Bedrock: its first region)."""
    return next(iter(build_providers(name, config, resolver).values()))


class ProviderRegistry:
    """The adapters of one replica (one SDK client each, connection pools shared by all requests).

    A Bedrock provider is one adapter per region (`bedrock@us-east-1`, ...), so routing and
    breakers can tell regions apart; its bare name means its preferred (first) region.
    Credentials are read by `resolver` (default: one for `config.secrets`) when the adapters are built.
    """

    def __init__(self, config: GatewayConfig, resolver: SecretResolver | None = None) -> None:
        self._config = config
        resolver = resolver or SecretResolver(config.secrets)
        self._providers: dict[str, Provider] = {}
        self._configs: dict[str, ProviderConfig] = {}
        self.canonical: dict[str, str] = {}  # any provider name -> its adapter's own (`bedrock` -> `bedrock@us-east-1`)
        self._serving: dict[str, tuple[str, ...]] = {}  # provider name -> the adapters that serve it, in order
        for name, provider in config.providers.items():
            built = build_providers(name, provider, resolver)
            self._providers.update(built)
            self._providers.setdefault(name, next(iter(built.values())))
            self._configs.update(dict.fromkeys([name, *built], provider))
            self.canonical.update({name: next(iter(built)), **{b: b for b in built}})
            self._serving.update({name: tuple(built), **{b: (b,) for b in built}})

    def limits(self) -> dict[str, tuple[int | None, int | None]]:
        """Every adapter (the unit a provider actor serves) with its rate limits (rpm, tpm)."""
        return {n: (self._configs[n].rpm, self._configs[n].tpm) for n in dict.fromkeys(self.canonical.values())}

    def targets(self, model: str, kind: str = "chat") -> list[Target]:
        """`model` on every adapter that serves it, in order of preference: a Bedrock model named by its bare
        provider is served from each configured region in turn (regional failover); one named `bedrock@<region>`
        only from there."""
        first = self.target(model, kind)
        return [first] + [Target(model, p, first.entry) for p in self._serving.get(first.entry.provider, ())[1:]]

    def target(self, model: str, kind: str = "chat") -> Target:
        """`model` on its preferred adapter (for Bedrock: its first region); unknown or wrong-kind models are errors."""
        entry = self._config.models.get(model)
        if entry is None:
            raise GatewayError(
                ErrorKind.NOT_FOUND, f"model `{model}` is not in the catalog (GET /v1/models lists it)",
                code="model_not_found", param="model", fallbackable=False,
            )  # fmt: skip
        if entry.kind != kind:
            raise GatewayError(
                ErrorKind.BAD_REQUEST, f"model `{model}` is a {entry.kind} model, not a {kind} model",
                code="model_not_supported", param="model",
            )  # fmt: skip
        return Target(name=model, provider=self.canonical.get(entry.provider, entry.provider), entry=entry)

    def unsupported(self, request: ChatRequest | EmbeddingsRequest, target: Target) -> str | None:
        """Why `target`'s adapter cannot take `request` as sent (None: it can); no network."""
        return self._providers[target.provider].unsupported(request, target)

    @property
    def catalog(self) -> Mapping[str, ModelEntry]:
        return self._config.models

    def kind(self, name: str) -> str:
        return self._configs[name].kind

    def timeouts(self, name: str) -> Timeouts:
        return self._configs[name].timeouts

    def provider(self, name: str) -> Provider:
        return self._providers[name]

    async def aclose(self) -> None:
        for p in {id(p): p for p in self._providers.values()}.values():
            await p.aclose()
