"""The first-run default, as README describes it: the bundled config, offline on loopback, runs in open mode (any
bearer token, identity from headers). Deployed as a second app next to the session's keys-mode gateway."""

from __future__ import annotations

import httpx
import pytest
from ray import serve

from gateway.auth.setup import auth_mode
from gateway.config import load_config
from launcher.cli import wait_http
from serve_app import build_app

pytestmark = pytest.mark.ray
PREFIX = "/first-run"
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")


@pytest.fixture(scope="module")
def first_run(gateway_url: str, emulator_url: str):
    with pytest.MonkeyPatch.context() as fresh:  # a fresh machine: no provider credentials in the environment
        for name in CREDENTIAL_ENV:
            fresh.delenv(name, raising=False)
        config = load_config().resolved(emulator_url)
    # its own control-plane actors (router, providers, ledger): the session app's policy and state stay its own
    config = config.model_copy(update={"control": config.control.model_copy(update={"namespace": "first_run"})})
    assert auth_mode(config) == "open"  # the default's `auto`: offline and on 127.0.0.1
    serve.run(build_app(config), name="first_run", route_prefix=PREFIX, blocking=False)
    try:
        assert wait_http(f"{gateway_url}{PREFIX}/readyz", 120), "the first-run app did not become ready"
        yield gateway_url + PREFIX
    finally:
        serve.delete("first_run")


def test_any_bearer_token_works_on_the_first_run(first_run):
    body = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]}
    r = httpx.post(f"{first_run}/v1/chat/completions", json=body, headers={"authorization": "Bearer any"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    # identity from headers, as before keys
    claimed = {"authorization": "Bearer any", "x-gateway-org": "acme", "x-gateway-user": "alice"}
    r = httpx.post(f"{first_run}/v1/chat/completions", json=body, timeout=30, headers=claimed)
    assert r.status_code == 200, r.text


def test_the_session_gateway_next_to_it_still_wants_keys(first_run, gateway_url):
    r = httpx.get(f"{gateway_url}/v1/models", headers={"authorization": "Bearer any"})
    assert r.status_code == 401
    assert httpx.get(f"{first_run}/v1/models", headers={"authorization": "Bearer any"}).status_code == 200
