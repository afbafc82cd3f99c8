"""Browser callers: CORS only for the named origins, methods and headers; `*` refused; no cookies."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from gateway.config import CorsConfig
from gateway.http_api import _allow_browsers

ORIGIN = "https://app.example.com"


@pytest.fixture()
def client() -> TestClient:
    api = FastAPI()
    api.add_api_route("/v1/gateway/chat", lambda: {"ok": True}, methods=["POST"])
    return TestClient(_allow_browsers(api, CorsConfig(origins=(ORIGIN,))))


def _preflight(client: TestClient, origin: str, method: str = "POST", headers: str = "authorization"):
    return client.options("/v1/gateway/chat", headers={"origin": origin, "access-control-request-method": method,
                                                        "access-control-request-headers": headers})  # fmt: skip


def test_a_named_origin_may_call_with_its_key_in_authorization(client: TestClient) -> None:
    r = _preflight(client, ORIGIN)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in r.headers  # no cookies
    answer = client.post("/v1/gateway/chat", headers={"origin": ORIGIN})
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "x-gateway-cost-usd" in answer.headers["access-control-expose-headers"]


def test_other_origins_methods_and_headers_get_no_grant(client: TestClient) -> None:
    assert "access-control-allow-origin" not in _preflight(client, "https://evil.example").headers
    assert _preflight(client, ORIGIN, method="DELETE").status_code == 400
    assert _preflight(client, ORIGIN, headers="x-secret-header").status_code == 400
    answer = client.post("/v1/gateway/chat", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize("field", ["origins", "methods", "headers"])
def test_a_wildcard_is_refused(field: str) -> None:
    spec = {"origins": (ORIGIN,), field: ("*",)}
    with pytest.raises(ValidationError, match="not accepted"):
        CorsConfig.model_validate(spec)
