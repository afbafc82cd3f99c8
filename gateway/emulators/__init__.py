"""Wire-accurate LLM provider emulators: OpenAI, Anthropic, Gemini and Bedrock, each under its own path prefix."""

from __future__ import annotations

from gateway.emulators.config import EmulatorSettings
from gateway.emulators.server import Emulator

__all__ = ["Emulator", "EmulatorSettings"]
