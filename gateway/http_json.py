"""JSON bodies in and out of the HTTP surface: a request body parsed (a 400 naming `body` if it is not JSON), and
a JSON response encoded the one way the gateway encodes them."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from gateway.json_codec import dumps
from gateway.schema import validation_error


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, headers=headers, media_type="application/json")


async def read_json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise validation_error("body", f"not valid JSON ({exc})") from None
