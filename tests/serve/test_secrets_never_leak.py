"""End to end: a provider key that lives only in Secrets Manager (moto over real HTTP) is rotated there and picked up
after the provider's 401 without a restart; then no secret of the session (gateway keys, the admin key, the pepper,
provider keys) appears in any Ray session log, in Serve's stored state, or in any answer of the gateway.

Named to run last in this directory: the grep covers what every other test made the gateway log."""

from __future__ import annotations

import contextlib
import json
import secrets
from pathlib import Path

import httpx
import pytest
import ray

from tests.serve.conftest import VAULT_SECRET
from tests.serve.keys import ADMIN, ADMIN_KEY, AUTH, OPS_KEY, PEPPER, VAULT_KEY

pytestmark = pytest.mark.ray
OFFLINE_KEY = "offline-emulator-key"  # what every other emulator-backed provider sends
VAULT = {"model": "vault-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "from the vault"}]}
ROTATED: list[str] = []  # provider keys this module stored in Secrets Manager (for the grep)
ISSUED: list[str] = []  # gateway keys this module issued


@contextlib.contextmanager
def _emulator_accepts(emulator, *api_keys: str):
    """The emulator refuses (401) any provider key but these while the block runs."""
    emulator.settings.api_keys = (OFFLINE_KEY, *api_keys)
    try:
        yield
    finally:
        emulator.settings.api_keys = ()


def _vault_calls(emulator) -> list[str]:
    """The bearer of every call the vault model made upstream, in order."""
    calls = [r for r in emulator.recorder.requests if "from the vault" in json.dumps(r.body or {})]
    return [{k.lower(): v for k, v in r.headers.items()}.get("authorization", "")[7:] for r in calls]


def _chat(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=30)


def test_a_provider_key_in_secrets_manager_rotates_without_a_restart(gateway_url, emulator, secrets_manager):
    with _emulator_accepts(emulator, VAULT_KEY):  # only the key stored in Secrets Manager gets in
        assert _chat(gateway_url, VAULT).status_code == 200
    rotated = "sk-vault-" + secrets.token_urlsafe(24)
    ROTATED.append(rotated)
    secrets_manager.put_secret_value(SecretId=VAULT_SECRET, SecretString=json.dumps({"api_key": rotated}))
    before = len(_vault_calls(emulator))
    with _emulator_accepts(emulator, rotated):  # the provider now refuses the old key
        answers = [_chat(gateway_url, {**VAULT, "max_tokens": 5 + i}) for i in range(6)]  # both replicas
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    sent = _vault_calls(emulator)[before:]
    # each replica met one 401 at most with the old key, re-read the secret and retried once: then the new key only
    assert 1 <= sent.count(VAULT_KEY) <= 2 and sent.count(rotated) == 6 and len(sent) == sent.count(VAULT_KEY) + 6
    assert all(a.headers["x-gateway-attempts"] == "1" for a in answers)  # the refresh is not a fallback


def test_a_provider_key_that_is_not_rotated_is_an_upstream_auth_error(gateway_url, emulator):
    with _emulator_accepts(emulator, "sk-something-else"):
        r = _chat(gateway_url, VAULT)
    assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_auth_error"
    assert all(k not in r.text for k in (VAULT_KEY, *ROTATED))


def test_keys_made_and_misused_here_leave_no_trace(gateway_url):
    """Traffic for the greps below: a key issued, rotated, misused and revoked (each answer as it should be)."""
    created = httpx.post(f"{gateway_url}/v1/gateway/keys", json={"name": "leak-probe", "org": "acme"}, headers=ADMIN)
    assert created.status_code == 201, created.text
    key_id, key = created.json()["key_id"], created.json()["key"]
    rotated = httpx.post(f"{gateway_url}/v1/gateway/keys/{key_id}/rotate", json={"grace_s": 0}, headers=ADMIN)
    assert rotated.status_code == 200, rotated.text
    ISSUED.extend([key, rotated.json()["key"]])
    tries = {key + "x": 401, rotated.json()["key"]: 200, ADMIN_KEY + "x": 401}  # malformed, good, a wrong admin key
    for token, status in tries.items():
        r = httpx.post(f"{gateway_url}/v1/chat/completions", json=VAULT, headers={"authorization": f"Bearer {token}"})
        assert r.status_code == status, (status, r.text)
    assert httpx.delete(f"{gateway_url}/v1/gateway/keys/{key_id}", headers=ADMIN).status_code == 200
    r = httpx.post(f"{gateway_url}/v1/chat/completions", json=VAULT, headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 401  # revoked (and its first secret rotated out)


def _secrets() -> dict[str, str]:
    """Every secret of the session, by name: gateway keys by their secret part (the key id is public)."""
    out = {"pepper": PEPPER, "admin key": ADMIN_KEY, "ops key": OPS_KEY.split("_", 2)[2], "vault key": VAULT_KEY}
    out |= {f"rotated provider key {i}": k for i, k in enumerate(ROTATED)}
    out |= {f"issued key {i}": k.split("_", 2)[2] for i, k in enumerate(ISSUED)}
    return out


def _found_in(blob: bytes, named: dict[str, str]) -> list[str]:
    return [name for name, value in named.items() if value.encode() in blob]


def test_no_secret_in_any_ray_log(gateway_url):
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    files = [f for f in session.rglob("*") if f.is_file() and f.suffix in (".log", ".out", ".err", ".txt", ".cfg")]
    replica_logs = [f for f in files if "replica" in f.name]
    assert replica_logs, "no replica logs found: the grep would prove nothing"
    audited = b"".join(f.read_bytes() for f in replica_logs)
    assert b'"event":"auth_decision"' in audited and b'"decision":"deny"' in audited  # the audit trail is there
    leaks = {str(f.relative_to(session)): found for f in files if (found := _found_in(f.read_bytes(), _secrets()))}
    assert leaks == {}


def test_no_secret_in_serve_state(gateway_url, emulator_url):
    """Serve keeps the deployment's arguments in the GCS; they carry references, never values."""
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_list
    from ray.serve._private.storage.kv_store import SERVE_INTERNAL_KV_NAMESPACE

    names = _internal_kv_list("", namespace=SERVE_INTERNAL_KV_NAMESPACE)
    state = b"".join(_internal_kv_get(n, namespace=SERVE_INTERNAL_KV_NAMESPACE) or b"" for n in names)
    assert VAULT_SECRET.encode() in state  # the reference is there: a value would have been found too
    assert _found_in(state, _secrets()) == []


def test_no_secret_in_any_gateway_answer(gateway_url):
    reads = ["/v1/models", "/v1/gateway/providers", "/v1/gateway/policy", "/v1/gateway/keys",
             "/v1/gateway/budgets/org/tests", "/readyz"]  # fmt: skip
    blob = b"".join(httpx.get(gateway_url + path, headers=AUTH, timeout=20).content for path in reads)
    assert b"openai-vault" in blob  # the providers view names the vault provider ...
    assert _found_in(blob, _secrets()) == []  # ... but not its key
