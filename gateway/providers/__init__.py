"""Provider adapters behind one protocol, and the registry that builds them from configuration."""

from gateway.providers.base import Provider, Target
from gateway.providers.registry import ProviderRegistry

__all__ = ["Provider", "ProviderRegistry", "Target"]
