"""Choosing the auth mode (open only offline on loopback, refused elsewhere saying why; LLM_GATEWAY_AUTH overrides),
and reading the key pepper (a value, or a private local file made once) and the bootstrap admin keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.auth.keys import KeyHasher
from gateway.auth.setup import ADMIN_KEY_ENV, AUTH_ENV, admin_keys, auth_mode, is_loopback, pepper
from gateway.config import AuthConfig, ConfigError, GatewayConfig, parse_config
from gateway.secrets.resolver import SecretResolver

OFFLINE_PROVIDER = {"openai": {"kind": "openai", "api_key": "${TEST_GW_AUTH_KEY:-}"}}
REAL_PROVIDER = {"openai": {"kind": "openai", "api_key": "sk-test-not-real-but-set"}}
ADMIN_VALUE = "admin-" + "k" * 40


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (AUTH_ENV, ADMIN_KEY_ENV, "TEST_GW_AUTH_KEY", "TEST_GW_PEPPER", "TEST_GW_ADMIN"):
        monkeypatch.delenv(name, raising=False)


def _config(host: str = "127.0.0.1", mode: str | None = None, providers: dict | None = None,
            auth: dict | None = None) -> GatewayConfig:  # fmt: skip
    data: dict[str, object] = {
        "providers": providers or OFFLINE_PROVIDER,
        "models": {"m": {"provider": "openai", "upstream": "gpt-4o-mini"}},
        "server": {"host": host},
        "auth": {**({"mode": mode} if mode else {}), **(auth or {})},
    }
    return parse_config(data)


def _resolve(config: GatewayConfig):  # type: ignore[no-untyped-def]
    return SecretResolver(config.secrets).resolve


# --- the mode ----------------------------------------------------------------------------------------------------


def test_auto_is_open_offline_on_loopback_and_keys_otherwise() -> None:
    assert _config().auth.mode == "auto"
    assert auth_mode(_config("127.0.0.1")) == "open"
    assert auth_mode(_config("localhost")) == "open"
    assert auth_mode(_config("::1")) == "open"
    assert auth_mode(_config("0.0.0.0")) == "keys"
    assert auth_mode(_config("10.0.0.5")) == "keys"
    assert auth_mode(_config("127.0.0.1", providers=REAL_PROVIDER)) == "keys"


def test_credentials_from_the_environment_make_auto_choose_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config()
    assert auth_mode(config) == "open"
    monkeypatch.setenv("TEST_GW_AUTH_KEY", "sk-real-looking")
    assert auth_mode(_config()) == "keys"


def test_keys_is_always_allowed() -> None:
    assert auth_mode(_config("127.0.0.1", "keys")) == "keys"
    assert auth_mode(_config("0.0.0.0", "keys", REAL_PROVIDER)) == "keys"


def test_open_offline_on_loopback_is_allowed() -> None:
    assert auth_mode(_config("127.0.0.1", "open")) == "open"


def test_open_on_a_public_address_is_refused_saying_why() -> None:
    with pytest.raises(ConfigError) as info:
        auth_mode(_config("0.0.0.0", "open"))
    assert "0.0.0.0" in str(info.value) and "loopback" in str(info.value)
    assert "credentials" not in str(info.value)


def test_open_with_real_credentials_is_refused_saying_why() -> None:
    with pytest.raises(ConfigError) as info:
        auth_mode(_config("127.0.0.1", "open", REAL_PROVIDER))
    message = str(info.value)
    assert "credentials" in message and "binds" not in message
    assert "sk-test-not-real-but-set" not in message


def test_open_refused_for_both_reasons_names_both() -> None:
    with pytest.raises(ConfigError) as info:
        auth_mode(_config("0.0.0.0", "open", REAL_PROVIDER))
    assert "0.0.0.0" in str(info.value) and "credentials" in str(info.value)


def test_the_environment_overrides_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTH_ENV, "keys")
    assert auth_mode(_config("127.0.0.1", "open")) == "keys"
    monkeypatch.setenv(AUTH_ENV, "open")
    assert auth_mode(_config("127.0.0.1", "keys")) == "open"
    with pytest.raises(ConfigError):  # the override is held to the same rule
        auth_mode(_config("0.0.0.0", "keys"))
    monkeypatch.setenv(AUTH_ENV, "auto")
    assert auth_mode(_config("0.0.0.0", "open")) == "keys"
    monkeypatch.setenv(AUTH_ENV, "")  # empty: not set
    assert auth_mode(_config("127.0.0.1", "keys")) == "keys"


def test_an_invalid_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTH_ENV, "none")
    with pytest.raises(ConfigError, match=f"{AUTH_ENV}=none"):
        auth_mode(_config())
    with pytest.raises(ConfigError, match=r"auth\.mode"):
        _config(mode="closed")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("::", False), ("192.168.1.2", False), ("example.com", False), ("localhost.example.com", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# --- the pepper --------------------------------------------------------------------------------------------------


def test_a_configured_pepper_is_used_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "pepper"
    config = _config(auth={"pepper": "p" * 16, "pepper_file": str(file)})
    assert pepper(config.auth, _resolve(config)) == b"p" * 16
    monkeypatch.setenv("TEST_GW_PEPPER", "q" * 32)
    config = _config(auth={"pepper": "${TEST_GW_PEPPER}", "pepper_file": str(file)})  # the usual form: a reference
    assert pepper(config.auth, _resolve(config)) == b"q" * 32
    assert not file.exists()  # no file is made when a pepper is configured


def test_a_short_pepper_is_refused_without_showing_it(tmp_path: Path) -> None:
    config = _config(auth={"pepper": "shortpepper1234", "pepper_file": str(tmp_path / "p")})
    with pytest.raises(ConfigError, match="16") as info:
        pepper(config.auth, _resolve(config))
    assert "shortpepper1234" not in str(info.value)


def test_without_a_pepper_a_private_file_is_made_once(tmp_path: Path) -> None:
    file = tmp_path / "cache" / "llm-gateway" / "key-pepper"
    config = _config(auth={"pepper_file": str(file)})
    umask = os.umask(0o022)
    try:
        first = pepper(config.auth, _resolve(config))
    finally:
        os.umask(umask)
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert len(first) >= 32
    KeyHasher(first)  # usable
    assert pepper(config.auth, _resolve(config)) == first  # the same on every later call (and restart)
    other = _config(auth={"pepper_file": str(tmp_path / "other")})
    assert pepper(other.auth, _resolve(other)) != first  # a new file: a new pepper


def test_an_unset_pepper_reference_falls_back_to_the_file(tmp_path: Path) -> None:
    file = tmp_path / "pepper"
    config = _config(auth={"pepper": "${TEST_GW_PEPPER}", "pepper_file": str(file)})
    value = pepper(config.auth, _resolve(config))
    assert file.read_bytes().strip() == value


def test_a_pepper_file_not_yet_written_never_yields_an_empty_pepper(tmp_path: Path) -> None:
    file = tmp_path / "pepper"
    file.touch(mode=0o600)  # an empty file (the pepper is now written elsewhere and linked into place whole)
    config = _config(auth={"pepper_file": str(file)})
    with pytest.raises(ConfigError, match="fewer than 16"):
        pepper(config.auth, _resolve(config))


# --- bootstrap admin keys ----------------------------------------------------------------------------------------


def test_admin_keys_come_from_the_config_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert admin_keys(AuthConfig(), lambda c: None) == ()
    monkeypatch.setenv("TEST_GW_ADMIN", ADMIN_VALUE)
    config = _config(auth={"admin_keys": ["${TEST_GW_ADMIN}", "${TEST_GW_UNSET_ADMIN:-}"]})
    assert admin_keys(config.auth, _resolve(config)) == (ADMIN_VALUE,)  # an unset reference adds none
    env_key = "env-" + "e" * 40
    monkeypatch.setenv(ADMIN_KEY_ENV, env_key)
    assert admin_keys(config.auth, _resolve(config)) == (ADMIN_VALUE, env_key)
    assert admin_keys(AuthConfig(), lambda c: None) == (env_key,)


def test_an_admin_key_shorter_than_32_characters_is_refused_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    short = "s" * 31
    config = _config(auth={"admin_keys": [short]})
    with pytest.raises(ConfigError, match="32") as info:
        admin_keys(config.auth, _resolve(config))
    assert short not in str(info.value)
    assert admin_keys(_config(auth={"admin_keys": ["s" * 32]}).auth, _resolve(config)) == ("s" * 32,)
    monkeypatch.setenv(ADMIN_KEY_ENV, "tooshort")
    with pytest.raises(ConfigError, match=ADMIN_KEY_ENV):
        admin_keys(AuthConfig(), lambda c: None)
