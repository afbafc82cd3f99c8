"""Request data and small helpers shared by the emulator tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.emulators.recorder import BillingRecord

MODEL = "gpt-4o-mini"
AUTH = {"authorization": "Bearer sk-test"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "w",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "days", "unit"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
Billing = Callable[..., BillingRecord]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def sse_lines(body: str) -> list[str]:
    return [line for line in body.split("\n") if line]
