"""JSON on the hot path: orjson, with the standard library for what orjson refuses (integers past 64 bits).

Encoding only, and decoding of what providers send: a caller's body is still parsed by the standard library,
which keeps integers of any size exact (orjson would turn one past 64 bits into a float)."""

from __future__ import annotations

import json
from typing import Any

import orjson

loads = orjson.loads  # a provider's answer: JSONDecodeError (a json.JSONDecodeError) when malformed
_fallback = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as the standard library's `ensure_ascii=False, separators=(",", ":")` writes it."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return _fallback(value).encode()
