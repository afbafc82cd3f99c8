"""Shared constants and helpers of the Gemini emulator tests (google-genai SDK and raw httpx)."""

from __future__ import annotations

import base64
import json
from typing import Any

from google import genai
from google.genai import types

FLASH = "gemini-2.0-flash"  # no thinking, no signatures
THINKING = "gemini-2.5-flash"  # thinks (thoughtsTokenCount) and signs its function calls
EMBED = "gemini-embedding-001"
KEY = {"x-goog-api-key": "k"}
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="w",
    parameters_json_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "days", "unit"],
    },
)
TIME = types.FunctionDeclaration(name="get_time", parameters=types.Schema(type="OBJECT", properties={}))
NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _client(url: str, timeout_ms: int = 10_000) -> genai.Client:
    options = types.HttpOptions(base_url=url + "/gemini/", api_version="v1beta", timeout=timeout_ms)
    return genai.Client(api_key="k", http_options=options)


def cfg(**kwargs: Any) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(automatic_function_calling=NO_AFC, **kwargs)


def rid(response: types.GenerateContentResponse) -> str:
    assert response.response_id
    return response.response_id


def sse_events(text: str) -> list[dict[str, Any]]:
    assert text.endswith("\r\n\r\n") and "[DONE]" not in text
    blocks = [b for b in text.split("\r\n\r\n") if b]
    assert all(b.startswith("data: ") for b in blocks)
    return [json.loads(b[6:]) for b in blocks]
