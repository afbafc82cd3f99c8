"""End to end on two replicas: who is calling is proven by a gateway key. 401s and 403s on every API, model scopes
that filter fallbacks, identity bound to the key, the admin API (create, rotate with grace, revoke), revocation on
both replicas within ~2 s, budgets that follow the key id across rotation."""

from __future__ import annotations

import time
import uuid

import anthropic
import httpx
import openai
import pytest

from tests.serve.keys import ADMIN, AUTH, OPS_KEY

pytestmark = pytest.mark.ray
HELLO = [{"role": "user", "content": "who am I"}]
CHAT = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": HELLO}
# every route that needs a caller, with a body that would otherwise be valid
ROUTES = [
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/chat/completions", {**CHAT, "stream": True}),
    ("POST", "/v1/gateway/chat", CHAT),
    ("POST", "/v1/gateway/route", CHAT),
    ("POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/gateway/providers", None),
    ("GET", "/v1/gateway/policy", None),
    ("POST", "/v1/gateway/policy/reload", None),
    ("GET", "/v1/gateway/budgets/user/budget-user", None),
    ("POST", "/v1/gateway/keys", {"name": "x", "org": "x"}),
    ("GET", "/v1/gateway/keys", None),
    ("GET", "/v1/gateway/keys/abcdefgh12345678", None),
    ("POST", "/v1/gateway/keys/abcdefgh12345678/rotate", None),
    ("DELETE", "/v1/gateway/keys/abcdefgh12345678", None),
]


def _call(url: str, method: str, path: str, body: object, headers: dict) -> httpx.Response:
    return httpx.request(method, url + path, json=body, headers=headers, timeout=20)


def _create(url: str, **spec) -> dict:
    r = httpx.post(f"{url}/v1/gateway/keys", json={"name": f"t-{uuid.uuid4().hex[:6]}", **spec}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()


def _bearer(key: str) -> dict:
    return {"authorization": f"Bearer {key}"}


def _chat(url: str, key: str, body: dict | None = None, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body or CHAT, headers={**_bearer(key), **headers}, timeout=20)


def _assert_401(r: httpx.Response, *secrets: str) -> None:
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.headers["www-authenticate"].startswith("Bearer")
    error = r.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert all(s not in r.text for s in secrets)  # never the key, nor any part of it


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_no_credentials_is_401_on_every_route(gateway_url, method, path, body):
    _assert_401(_call(gateway_url, method, path, body, {}))


def test_health_stays_open(gateway_url):
    assert httpx.get(f"{gateway_url}/healthz").status_code == 200
    assert httpx.get(f"{gateway_url}/readyz").status_code == 200


@pytest.mark.parametrize(
    "token",
    ["not-a-key", "gwk_short_x", "gwk_zzzzzzzzzzzzzzzz_" + "A" * 43, OPS_KEY[:-4] + "AAAA", "Bearer", "a.b.c"],
)
def test_malformed_unknown_and_wrong_keys_are_401_without_echo(gateway_url, token):
    r = _chat(gateway_url, token)
    _assert_401(r, *([token] if len(token) >= 20 else []))
    assert OPS_KEY.split("_", 2)[2][:8] not in r.text


def test_anthropic_sdk_gets_anthropic_errors(gateway_url):
    with anthropic.Anthropic(base_url=gateway_url, api_key="wrong-key", max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError) as info:
            client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=HELLO)
    body = info.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    scoped = _create(gateway_url, org="acme", models=["gpt-4o-mini"])
    with anthropic.Anthropic(base_url=gateway_url, api_key=scoped["key"], max_retries=0) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as denied:
            client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=HELLO)
        assert denied.value.response.json()["error"]["type"] == "permission_error"
        assert client.messages.create(model="gpt-4o-mini", max_tokens=5, messages=HELLO).content  # its own model


def test_openai_sdk_with_a_bad_key_raises_authentication_error(gateway_url):
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="gwk_nope", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(**CHAT)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(**CHAT, stream=True)


def _anthropic_calls(emulator) -> int:
    return sum(1 for r in emulator.recorder.requests if r.provider == "anthropic")


def test_a_model_scoped_key_is_refused_other_models_and_its_fallbacks_skip_them(gateway_url, emulator):
    key = _create(gateway_url, org="acme", models=["gpt-4o-mini*"])["key"]
    r = _chat(gateway_url, key, {**CHAT, "model": "claude-haiku-4-5"})
    assert r.status_code == 403
    assert r.json()["error"] | {"message": ""} == {"type": "permission_error", "code": "model_not_allowed",
                                                    "param": "model", "message": ""}  # fmt: skip
    # a fallback chain through a model the key may not use: that one is skipped, never called
    body = {**CHAT, "model": "gpt-4o-mini-fault-503", "fallbacks": ["claude-haiku-4-5", "gpt-4o-mini"]}
    before = _anthropic_calls(emulator)
    r = _chat(gateway_url, key, body)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "gpt-4o-mini" and _anthropic_calls(emulator) == before
    # `auto` chains too: the dry run names what the key cut out
    plan = httpx.post(f"{gateway_url}/v1/gateway/route", json={**CHAT, "model": "auto"}, headers=_bearer(key)).json()
    assert plan["candidates"] and all(c["model"].startswith("gpt-4o-mini") for c in plan["candidates"])
    assert any("not allowed for key" in s["why"] for s in plan["skipped"])
    models = httpx.get(f"{gateway_url}/v1/models", headers=_bearer(key)).json()["data"]
    assert models and all(m["id"].startswith("gpt-4o-mini") for m in models)
    # a key whose models can serve none of the chain: 403, nothing called
    embeddings_only = _create(gateway_url, org="acme", models=["text-embedding-*"])["key"]
    r = _chat(gateway_url, embeddings_only, {**CHAT, "model": "auto"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"


def test_embeddings_need_the_embeddings_scope(gateway_url):
    chat_only = _create(gateway_url, org="acme", scopes=["chat"])["key"]
    r = httpx.post(f"{gateway_url}/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"},
                   headers=_bearer(chat_only))  # fmt: skip
    assert r.status_code == 403 and r.json()["error"]["code"] == "scope_not_allowed"
    assert _chat(gateway_url, chat_only).status_code == 200


def test_identity_comes_from_the_key_and_a_contradicting_claim_is_403(gateway_url):
    key = _create(gateway_url, org="acme", user="alice", daemons=["executor"])["key"]
    assert _chat(gateway_url, key).status_code == 200
    assert _chat(gateway_url, key, **{"x-gateway-org": "acme", "x-gateway-daemon": "executor"}).status_code == 200
    cases = [
        ({"x-gateway-org": "globex"}, None, "identity_mismatch"),
        ({"x-gateway-user": "mallory"}, None, "identity_mismatch"),
        ({"x-gateway-daemon": "router"}, None, "daemon_not_allowed"),
        ({}, {**CHAT, "gateway": {"org": "globex"}}, "identity_mismatch"),
        ({}, {**CHAT, "user": "mallory"}, "identity_mismatch"),  # OpenAI's `user` names an end user too
    ]
    for headers, body, code in cases:
        r = _chat(gateway_url, key, body, **headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == code, (headers, r.text)
    # a service key may name end users (of its own org)
    service = _create(gateway_url, org="acme", may_set_user=True)["key"]
    assert _chat(gateway_url, service, **{"x-gateway-user": "bob"}).status_code == 200


def test_admin_endpoints_refuse_keys_without_the_admin_scope(gateway_url):
    key = _create(gateway_url, org="acme", user="alice")["key"]
    for method, path, body in ROUTES[6:10] + ROUTES[10:]:
        if path.startswith("/v1/gateway/budgets"):
            continue
        r = _call(gateway_url, method, path, body, _bearer(key))
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required", (path, r.text)
    r = httpx.get(f"{gateway_url}/v1/gateway/budgets/org/globex", headers=_bearer(key))
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
    r = httpx.get(f"{gateway_url}/v1/gateway/budgets/user/budget-user", headers=_bearer(key))
    assert r.status_code == 403  # another user's budget, though in the same org


def test_the_admin_api_shows_a_secret_once_and_never_a_digest(gateway_url):
    created = _create(gateway_url, org="acme", models=["gpt-4o-mini"], scopes=["chat"])
    key_id, key = created["key_id"], created["key"]
    assert key.startswith(f"gwk_{key_id}_") and len(key.split("_", 2)[2]) >= 43  # ≥ 256 bits
    assert created["scopes"] == ["chat"] and created["may_set_user"] is False
    shown = httpx.get(f"{gateway_url}/v1/gateway/keys/{key_id}", headers=ADMIN)
    listed = httpx.get(f"{gateway_url}/v1/gateway/keys", headers=ADMIN)
    assert shown.status_code == listed.status_code == 200
    for text in (shown.text, listed.text):
        assert key.split("_", 2)[2] not in text and "digest" not in text and "sealed" not in text
    assert key_id in {k["key_id"] for k in listed.json()["data"]}
    bad = httpx.post(f"{gateway_url}/v1/gateway/keys", json={"name": "x", "org": "acme", "models": ["gpt-9*"]},
                     headers=ADMIN)  # fmt: skip
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "models.0"
    assert httpx.get(f"{gateway_url}/v1/gateway/keys/nosuchkey0000000", headers=ADMIN).status_code == 404


def _replicas_serving(url: str, key: str, want: int = 2) -> set[str]:
    """Calls until `want` replicas have served this key (each then holds it in its cache)."""
    seen: set[str] = set()
    for _ in range(60):
        r = _chat(url, key)
        assert r.status_code == 200, r.text
        seen.add(r.headers["x-gateway-replica"])
        if len(seen) >= want:
            break
    return seen


def _refused_everywhere_within(url: str, key: str, seconds: float) -> float:
    """Seconds until 20 calls in a row are refused (both replicas), failing after `seconds`."""
    start = time.monotonic()
    streak = 0
    while streak < 20:
        assert time.monotonic() - start < seconds, "the key still works"
        r = httpx.get(f"{url}/v1/models", headers=_bearer(key), timeout=10)
        streak = streak + 1 if r.status_code == 401 else 0
    return time.monotonic() - start


def test_revocation_reaches_both_replicas_within_two_seconds(gateway_url):
    created = _create(gateway_url, org="acme")
    assert len(_replicas_serving(gateway_url, created["key"])) == 2
    r = httpx.delete(f"{gateway_url}/v1/gateway/keys/{created['key_id']}", headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    _refused_everywhere_within(gateway_url, created["key"], 2.5)
    r = _chat(gateway_url, created["key"])
    _assert_401(r, created["key"])
    assert "revoked" in r.json()["error"]["message"]


def test_rotation_keeps_the_old_secret_for_its_grace_and_the_budget_follows_the_key(gateway_url):
    created = _create(gateway_url, org="acme")
    key_id, old = created["key_id"], created["key"]
    assert _chat(gateway_url, old).status_code == 200
    rotate = f"{gateway_url}/v1/gateway/keys/{key_id}/rotate"
    headers = {**ADMIN, "idempotency-key": uuid.uuid4().hex}
    first = httpx.post(rotate, json={"grace_s": 60}, headers=headers)
    again = httpx.post(rotate, json={"grace_s": 60}, headers=headers)  # a retried request: the same rotation
    assert first.status_code == again.status_code == 200
    new = first.json()["key"]
    assert again.json()["key"] == new != old and first.json()["key_id"] == key_id
    assert len(again.json()["secret_versions"]) == 2  # rotated once, not twice
    for key in (old, new, old, new):
        assert _chat(gateway_url, key).status_code == 200  # in its grace period the old secret still works
    # the key's own budget (scope: key) is one account across both secrets
    spent = httpx.get(f"{gateway_url}/v1/gateway/budgets/key/{key_id}", headers=_bearer(new))
    assert spent.status_code == 200, spent.text
    assert spent.json()["budgets"][0]["key"] == key_id
    # a rotation without grace: the old secrets stop working everywhere
    final = httpx.post(rotate, json={"grace_s": 0}, headers=ADMIN).json()["key"]
    _refused_everywhere_within(gateway_url, new, 2.5)
    assert _chat(gateway_url, old).status_code == 401
    assert _chat(gateway_url, final).status_code == 200


def test_budgets_follow_the_key_id_across_rotation(gateway_url):
    created = _create(gateway_url, org="acme")
    key_id, old = created["key_id"], created["key"]
    answers = [_chat(gateway_url, old) for _ in range(3)]
    new = httpx.post(f"{gateway_url}/v1/gateway/keys/{key_id}/rotate", json={"grace_s": 0}, headers=ADMIN).json()
    answers += [_chat(gateway_url, new["key"]) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    used = sum(a.json()["usage"]["total_tokens"] for a in answers)
    budget = f"{gateway_url}/v1/gateway/budgets/key/{key_id}"
    deadline = time.monotonic() + 10
    while True:  # replicas settle in batches
        status = httpx.get(budget, headers=_bearer(new["key"])).json()["budgets"][0]
        if status["spent_tokens"] == used:
            break  # six calls under two secrets, one account
        assert time.monotonic() < deadline, (status["spent_tokens"], status["reserved_tokens"], used)
        time.sleep(0.1)
    other = httpx.get(budget, headers=AUTH)  # the admin-scoped ops key may read any key's budget
    assert other.status_code == 200
    stranger = _create(gateway_url, org="acme")["key"]
    assert httpx.get(budget, headers=_bearer(stranger)).status_code == 403


def test_the_key_registry_dies_and_keys_keep_working(gateway_url):
    """Replicas serve cached keys while the registry actor restarts; it comes back with every key (SQLite)."""
    import ray

    before = _create(gateway_url, org="acme")
    assert len(_replicas_serving(gateway_url, before["key"])) == 2
    ray.kill(ray.get_actor("key_registry", namespace="llm_gateway"), no_restart=False)
    assert all(_chat(gateway_url, before["key"]).status_code == 200 for _ in range(6))  # from the replicas' caches
    deadline = time.monotonic() + 60
    while True:  # the admin API answers again once Ray has restarted the actor
        r = httpx.post(f"{gateway_url}/v1/gateway/keys", json={"name": "after-restart", "org": "acme"}, headers=ADMIN)
        if r.status_code == 201:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    assert _chat(gateway_url, r.json()["key"]).status_code == 200
    shown = httpx.get(f"{gateway_url}/v1/gateway/keys/{before['key_id']}", headers=ADMIN)
    assert shown.status_code == 200 and shown.json()["status"] == "active"  # reloaded from the store
