"""Credentials from AWS Secrets Manager (a local moto server over HTTP): reading, caching, rotation, and a provider
that re-reads its key after the upstream refuses the old one."""

from __future__ import annotations

import asyncio
import json
import uuid

import boto3
import pytest
from pydantic import SecretStr

from gateway.config import ProviderConfig, SecretsConfig, parse_config
from gateway.providers.openai_provider import OpenAIProvider
from gateway.providers.registry import ProviderRegistry, build_provider
from gateway.providers.rotating import RotatingProvider
from gateway.schema import ChatRequest, ErrorKind, GatewayError, StartEvent
from gateway.secrets.refs import AwsSecretRef, EnvRef
from gateway.secrets.resolver import SecretResolver, SecretUnavailable, aws_refs, rotates, with_values
from tests.moto_support import REGION, moto_server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingResolver(SecretResolver):
    refreshes = 0

    def refresh(self, *creds) -> bool:
        self.refreshes += 1
        return super().refresh(*creds)


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("aws")) as url:
        yield url


@pytest.fixture(scope="module")
def sm(aws):
    return boto3.client("secretsmanager", region_name=REGION, endpoint_url=aws)


def _secret(sm, value: str) -> str:
    name = f"test/{uuid.uuid4().hex[:12]}"  # one per test: moto's state lives as long as the process
    sm.create_secret(Name=name, SecretString=value)
    return name


def _resolver(aws: str, clock=None, cls=SecretResolver) -> SecretResolver:
    return cls(SecretsConfig(endpoint_url=aws, ttl_s=60), **({"clock": clock} if clock else {}))


def test_resolves_a_whole_secret_string(aws, sm):
    ref = AwsSecretRef(aws_secret=_secret(sm, "sk-whole"))
    assert _resolver(aws).resolve(ref) == "sk-whole"


def test_resolves_one_field_of_a_json_secret(aws, sm):
    name = _secret(sm, json.dumps({"id": "AKIA-1", "secret": "s3cr3t"}))
    resolver = _resolver(aws)
    assert resolver.resolve(AwsSecretRef(aws_secret=name, field="secret")) == "s3cr3t"
    assert resolver.resolve(AwsSecretRef(aws_secret=name, field="id")) == "AKIA-1"


def test_region_and_endpoint_of_the_ref_win_over_the_defaults(aws):
    eu = boto3.client("secretsmanager", region_name="eu-west-1", endpoint_url=aws)
    name = _secret(eu, "sk-eu")
    ref = AwsSecretRef(aws_secret=name, region="eu-west-1", endpoint_url=aws)
    assert SecretResolver(SecretsConfig(endpoint_url="http://127.0.0.1:9")).resolve(ref) == "sk-eu"


def test_a_missing_secret_is_named_with_the_aws_error_code(aws):
    with pytest.raises(SecretUnavailable) as err:
        _resolver(aws).resolve(AwsSecretRef(aws_secret="test/no-such-secret"))
    assert str(err.value) == "aws secret test/no-such-secret: ResourceNotFoundException"


@pytest.mark.parametrize(
    ("value", "field", "problem"),
    [
        ("sk-not-json", "key", "the secret is not a JSON object"),
        (json.dumps({"other": "sk-hidden"}), "key", "the JSON object has no field `key`"),
        (json.dumps({"key": 42}), "key", "the JSON object has a non-string value in field `key`"),
    ],
)
def test_a_field_that_cannot_be_read_is_named_but_no_value(aws, sm, value, field, problem):
    name = _secret(sm, value)
    with pytest.raises(SecretUnavailable) as err:
        _resolver(aws).resolve(AwsSecretRef(aws_secret=name, field=field))
    assert str(err.value) == f"aws secret {name} field {field}: {problem}"
    assert "sk-" not in str(err.value)


def test_values_are_kept_for_the_ttl(aws, sm):
    name, clock = _secret(sm, "sk-v1"), Clock()
    resolver, ref = _resolver(aws, clock), AwsSecretRef(aws_secret=name)
    assert resolver.resolve(ref) == "sk-v1"
    sm.put_secret_value(SecretId=name, SecretString="sk-v2")
    clock.now += 59
    assert resolver.resolve(ref) == "sk-v1"  # from the cache: Secrets Manager was not asked
    sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    assert resolver.resolve(ref) == "sk-v1"
    clock.now += 2
    with pytest.raises(SecretUnavailable, match="ResourceNotFoundException"):
        resolver.resolve(ref)


def test_refresh_rereads_and_says_whether_the_value_changed(aws, sm):
    name = _secret(sm, "sk-v1")
    resolver, ref = _resolver(aws, Clock()), AwsSecretRef(aws_secret=name)
    assert resolver.resolve(ref) == "sk-v1"
    assert resolver.refresh(ref) is False
    sm.put_secret_value(SecretId=name, SecretString="sk-v2")
    assert resolver.resolve(ref) == "sk-v1"
    assert resolver.refresh(ref) is True
    assert resolver.resolve(ref) == "sk-v2"
    assert resolver.refresh(ref, None, SecretStr("x")) is False


def test_refresh_of_two_fields_of_one_secret_sees_either_change(aws, sm):
    name = _secret(sm, json.dumps({"id": "AKIA-1", "secret": "old"}))
    resolver = _resolver(aws, Clock())
    key_id, secret = AwsSecretRef(aws_secret=name, field="id"), AwsSecretRef(aws_secret=name, field="secret")
    assert (resolver.resolve(key_id), resolver.resolve(secret)) == ("AKIA-1", "old")
    sm.put_secret_value(SecretId=name, SecretString=json.dumps({"id": "AKIA-1", "secret": "new"}))
    assert resolver.refresh(key_id, secret) is True
    assert resolver.resolve(secret) == "new"


def test_literal_and_environment_credentials(monkeypatch):
    resolver = SecretResolver(SecretsConfig())
    monkeypatch.setenv("TEST_SECRETS_KEY", "sk-env")
    assert resolver.resolve(SecretStr("sk-literal")) == "sk-literal"
    assert resolver.resolve(EnvRef(env="TEST_SECRETS_KEY")) == "sk-env"
    assert resolver.resolve(EnvRef(env="TEST_SECRETS_UNSET", default="fallback")) == "fallback"
    assert resolver.resolve(None) is None


def test_with_values_resolves_every_credential_and_only_aws_refs_rotate(aws, sm, monkeypatch):
    monkeypatch.setenv("TEST_SECRETS_ID", "AKIA-env")
    name = _secret(sm, json.dumps({"secret": "s3cr3t"}))
    config = ProviderConfig(
        kind="bedrock", regions=[{"name": "us-east-1"}], aws_access_key_id=EnvRef(env="TEST_SECRETS_ID"),
        aws_secret_access_key=AwsSecretRef(aws_secret=name, field="secret"),
    )  # fmt: skip
    resolver = _resolver(aws)
    resolved = with_values(config, resolver)
    assert resolved.aws_access_key_id == SecretStr("AKIA-env")
    assert resolved.aws_secret_access_key == SecretStr("s3cr3t")
    assert resolved.api_key is None
    assert aws_refs(config) == (config.aws_secret_access_key,) and rotates(config)
    assert not rotates(resolved)
    assert "s3cr3t" not in repr(resolver) and "s3cr3t" not in repr(resolved)


def test_an_unresolved_reference_is_refused_by_the_adapters():
    config = ProviderConfig(kind="openai", api_key=EnvRef(env="TEST_SECRETS_KEY"))
    with pytest.raises(TypeError, match="environment variable TEST_SECRETS_KEY"):
        OpenAIProvider("openai", config)


# --- a provider whose key rotates in Secrets Manager, against the OpenAI emulator ---------------------------------


@pytest.fixture
def rotation(aws, sm, emulator, monkeypatch):
    """A secret holding the key the emulator accepts (only that key), and a run id to pick out this test's calls."""
    key = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setattr(emulator.settings, "api_keys", (key,))
    return _secret(sm, key), key, uuid.uuid4().hex


def _config(aws: str, emulator_url: str, secret: str, run: str):
    return parse_config({
        "secrets": {"endpoint_url": aws, "ttl_s": 60},
        "providers": {"openai": {"kind": "openai", "base_url": emulator_url + "/openai/v1",
                                 "api_key": {"aws_secret": secret}, "headers": {"x-test-run": run}}},
        "models": {"gpt-4o-mini": {"provider": "openai", "upstream": "gpt-4o-mini"}},
    })  # fmt: skip


def _seen(emulator, run: str) -> list[tuple[str, bool]]:
    """This test's calls as the emulator saw them: the bearer key, and whether the call was answered (billed)."""
    billed = {b.request_id for b in emulator.recorder.billing}
    return [(r.headers["authorization"][7:], r.request_id in billed)
            for r in emulator.recorder.requests if r.headers.get("x-test-run") == run]  # fmt: skip


def _rotate(sm, emulator, secret: str) -> str:
    new = f"sk-{uuid.uuid4().hex}"
    sm.put_secret_value(SecretId=secret, SecretString=new)
    emulator.settings.api_keys = (new,)
    return new


HELLO = ChatRequest(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])


async def test_a_rotated_key_is_reread_after_one_401(aws, sm, emulator, emulator_url, rotation):
    secret, old, run = rotation
    registry = ProviderRegistry(_config(aws, emulator_url, secret, run))
    provider, target = registry.provider("openai"), registry.target("gpt-4o-mini")
    assert isinstance(provider, RotatingProvider)
    try:
        assert (await provider.complete(HELLO, target)).text
        new = _rotate(sm, emulator, secret)
        assert (await provider.complete(HELLO, target)).text
        assert _seen(emulator, run) == [(old, True), (old, False), (new, True)]
        events = [e async for e in provider.stream(HELLO, target)]
        assert isinstance(events[0], StartEvent)
        assert _seen(emulator, run)[3:] == [(new, True)]
        assert old not in repr(provider) and new not in repr(provider) and new not in repr(registry)
    finally:
        await registry.aclose()


async def test_a_stream_refused_before_its_first_event_is_retried_once(aws, sm, emulator, emulator_url, rotation):
    secret, old, run = rotation
    registry = ProviderRegistry(_config(aws, emulator_url, secret, run))
    provider, target = registry.provider("openai"), registry.target("gpt-4o-mini")
    try:
        new = _rotate(sm, emulator, secret)
        events = [e async for e in provider.stream(HELLO, target)]
        assert isinstance(events[0], StartEvent)
        assert _seen(emulator, run) == [(old, False), (new, True)]
    finally:
        await registry.aclose()


async def test_concurrent_401s_share_one_reread(aws, sm, emulator, emulator_url, rotation):
    secret, old, run = rotation
    resolver = _resolver(aws, cls=CountingResolver)
    registry = ProviderRegistry(_config(aws, emulator_url, secret, run), resolver)
    provider, target = registry.provider("openai"), registry.target("gpt-4o-mini")
    try:
        new = _rotate(sm, emulator, secret)
        answers = await asyncio.gather(*(provider.complete(HELLO, target) for _ in range(5)))
        assert all(a.text for a in answers)
        assert resolver.refreshes == 1
        assert sorted(_seen(emulator, run)) == sorted([(old, False)] * 5 + [(new, True)] * 5)
    finally:
        await registry.aclose()


async def test_a_key_refused_without_a_rotation_surfaces_as_auth_without_a_retry(
    aws, sm, emulator, emulator_url, rotation
):
    secret, old, run = rotation
    resolver = _resolver(aws, cls=CountingResolver)
    registry = ProviderRegistry(_config(aws, emulator_url, secret, run), resolver)
    provider, target = registry.provider("openai"), registry.target("gpt-4o-mini")
    try:
        emulator.settings.api_keys = ("sk-some-other-key",)  # the upstream revoked it; Secrets Manager has no new one
        for _ in range(3):
            with pytest.raises(GatewayError) as err:
                await provider.complete(HELLO, target)
            assert err.value.kind is ErrorKind.AUTH
            assert old not in str(err.value) and old not in repr(err.value)
        with pytest.raises(GatewayError):
            [e async for e in provider.stream(HELLO, target)]
        assert _seen(emulator, run) == [(old, False)] * 4  # one call each, no retry
        assert resolver.refreshes == 1  # re-read once; the later 401s fall in the quiet period
    finally:
        await registry.aclose()


async def test_providers_without_aws_secrets_are_not_wrapped(emulator_url):
    config = ProviderConfig(kind="openai", base_url=emulator_url + "/openai/v1", api_key="sk-test")
    provider = build_provider("openai", config)
    try:
        assert not isinstance(provider, RotatingProvider)
    finally:
        await provider.aclose()


async def test_the_wrapper_keeps_count_tokens_when_the_adapter_has_it(aws, sm, emulator_url):
    name = _secret(sm, "sk-anthropic")
    config = ProviderConfig(kind="anthropic", base_url=emulator_url + "/anthropic", api_key={"aws_secret": name})
    provider = build_provider("anthropic", config, _resolver(aws))
    openai = build_provider("openai", config.model_copy(update={"kind": "openai"}), _resolver(aws))
    try:
        assert isinstance(provider, RotatingProvider) and hasattr(provider, "count_tokens")
        assert isinstance(openai, RotatingProvider) and not hasattr(openai, "count_tokens")
    finally:
        await provider.aclose()
        await openai.aclose()
