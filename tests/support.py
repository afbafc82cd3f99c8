"""Test data shared by the layers: the catalog with fault models and the emulator timings."""

from __future__ import annotations

FAULTS = (
    "429",
    "429-no-retry-after",
    "quota",
    "401",
    "500-once",
    "503",
    "reset",
    "hang",
    "slow-first-token",
    "cut",
    "stall",
    "malformed",
    "no-done",
    "context-length",
    "content-filter",
)
SLOW_FIRST_TOKEN_MS = 700


def catalog_with_faults() -> dict:
    """Public models for the tests: plain ones plus `<model>-fault-<name>` for every injectable fault."""
    models: dict = {
        "gpt-4o-mini": {"provider": "openai", "upstream": "gpt-4o-mini", "capabilities": {"images": True}},
        "gpt-4.1-mini": {"provider": "openai", "upstream": "gpt-4.1-mini", "api": "responses"},
        "no-tools": {"provider": "openai", "upstream": "gpt-4o-mini", "capabilities": {"tools": False}},
        "text-embedding-3-small": {
            "provider": "openai",
            "upstream": "text-embedding-3-small",
            "kind": "embedding",
            "dimensions": 1536,
        },
    }
    models |= {  # one chat model on each of the other providers
        "claude-haiku-4-5": {
            "provider": "anthropic",
            "upstream": "claude-haiku-4-5",
            "capabilities": {"images": True, "prefill": True},
        },
        "gemini-2.5-flash": {"provider": "gemini", "upstream": "gemini-2.5-flash", "capabilities": {"images": True}},
        "bedrock-claude-haiku": {"provider": "bedrock", "upstream": "anthropic.claude-3-haiku-20240307-v1:0"},
    }
    for fault in FAULTS:
        for base, api in (("gpt-4o-mini", "chat"), ("gpt-4.1-mini", "responses")):
            models[f"{base}-fault-{fault}"] = {
                "provider": "openai",
                "upstream": f"{base}-fault-{fault}",
                "api": api,
                "price_as": base,
            }
    return models
