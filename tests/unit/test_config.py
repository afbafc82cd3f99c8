"""The configuration file: strict validation naming file and field, env references, offline resolution."""

import pytest

from gateway.config import ConfigError, load_config, parse_config

BASE = {
    "providers": {"openai": {"kind": "openai", "api_key": "${TEST_GW_KEY:-}"}},
    "models": {"m": {"provider": "openai", "upstream": "gpt-4o-mini"}},
}


def test_bundled_default_config_loads_and_is_offline_without_keys(monkeypatch):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)  # (the serve tests' local AWS server puts fake AWS keys in the env)
    config = load_config()
    assert config.is_offline
    assert "gpt-4o-mini" in config.models
    resolved = config.resolved("http://127.0.0.1:9999")
    assert resolved.providers["openai"].base_url == "http://127.0.0.1:9999/openai/v1"


def test_credentials_from_environment_switch_offline_off(monkeypatch):
    monkeypatch.setenv("TEST_GW_KEY", "sk-test-not-real")
    config = parse_config(BASE)
    assert not config.is_offline
    assert config.resolved(None) is config
    assert "sk-test-not-real" not in repr(config)  # secrets never show in logs


def test_unknown_keys_are_rejected_with_file_and_field(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text("providers: {openai: {kind: openai, api_kee: x}}\nmodels: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "providers.openai.api_kee" in str(info.value)


def test_model_must_name_a_configured_provider():
    bad = {**BASE, "models": {"m": {"provider": "nope", "upstream": "x"}}}
    with pytest.raises(ConfigError, match=r"models\.m\.provider"):
        parse_config(bad)


def test_missing_file_and_bad_yaml_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("providers: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
