"""Builds the provider adapters named in the configuration and resolves public model names to targets."""

from __future__ import annotations

from gateway.config import GatewayConfig, ProviderConfig, Timeouts
from gateway.providers.anthropic_provider import AnthropicProvider
from gateway.providers.base import Provider, Target
from gateway.providers.gemini_provider import GeminiProvider
from gateway.providers.openai_provider import OpenAIProvider
from gateway.schema import ErrorKind, GatewayError


def build_provider(name: str, config: ProviderConfig) -> Provider:
    if config.kind == "openai":
        return OpenAIProvider(name, config)
    if config.kind == "anthropic":
        return AnthropicProvider(name, config)
    if config.kind == "gemini":
        return GeminiProvider(name, config)
    raise ValueError(f"providers.{name}.kind: unsupported provider kind `{config.kind}`")


class ProviderRegistry:
    """The adapters of one replica (one SDK client each, connection pools shared by all requests)."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._providers = {name: build_provider(name, p) for name, p in config.providers.items()}

    def target(self, model: str, kind: str = "chat") -> Target:
        entry = self._config.models.get(model)
        if entry is None:
            raise GatewayError(
                ErrorKind.NOT_FOUND,
                f"model `{model}` is not in the catalog (GET /v1/models lists it)",
                code="model_not_found",
                param="model",
                fallbackable=False,
            )
        if entry.kind != kind:
            raise GatewayError(
                ErrorKind.BAD_REQUEST,
                f"model `{model}` is a {entry.kind} model, not a {kind} model",
                code="model_not_supported",
                param="model",
            )
        return Target(name=model, provider=entry.provider, entry=entry)

    def kind(self, name: str) -> str:
        return self._config.providers[name].kind

    def timeouts(self, name: str) -> Timeouts:
        return self._config.providers[name].timeouts

    def provider(self, name: str) -> Provider:
        return self._providers[name]

    async def aclose(self) -> None:
        for p in self._providers.values():
            await p.aclose()
