"""Credential values, read inside the process that uses them: a literal, an environment variable, or AWS Secrets
Manager (kept `secrets.ttl_s`, re-read on demand when a provider refuses the value it was given)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from gateway.config import ConfigError, ProviderConfig, SecretsConfig
from gateway.secrets.refs import AwsSecretRef, Credential, EnvRef, describe

PROVIDER_CREDENTIALS = ("api_key", "aws_access_key_id", "aws_secret_access_key")
_CLIENT_CONFIG = Config(retries={"total_max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=10)
_Key = tuple[str, str, str | None]  # (secret id, region, endpoint)


class SecretUnavailable(ConfigError):
    """A credential that could not be read; the message says where it comes from and why, never a value."""


class SecretResolver:
    """Turns a configured credential into its value. AWS secrets are read lazily, one client per (region, endpoint),
    and each SecretString is kept `ttl_s` (`clock` seconds); `refresh` drops and re-reads it."""

    def __init__(self, config: SecretsConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._cache: dict[_Key, tuple[str, float]] = {}  # key -> (SecretString, expires at)

    def __repr__(self) -> str:
        c = self._config
        return f"SecretResolver(region={c.region!r}, endpoint_url={c.endpoint_url!r}, cached={len(self._cache)})"

    def resolve(self, cred: Credential | None) -> str | None:
        """The credential's value (None for none); SecretUnavailable when an AWS secret cannot be read."""
        if cred is None:
            return None
        if isinstance(cred, SecretStr):
            return cred.get_secret_value()
        if isinstance(cred, EnvRef):
            return cred.value()
        return _field(cred, self._secret_string(cred))

    def refresh(self, *creds: Credential | None) -> bool:
        """Re-read the AWS secrets among `creds` (dropping their cached values); whether any of their values changed."""
        refs = [c for c in creds if isinstance(c, AwsSecretRef)]
        with self._lock:
            before = {k: self._cache.pop(k, None) for k in {self._key(r) for r in refs}}
        old = [_field_or_none(r, before[self._key(r)]) for r in refs]
        return [self.resolve(r) for r in refs] != old

    def _key(self, ref: AwsSecretRef) -> _Key:
        return ref.aws_secret, ref.region or self._config.region, ref.endpoint_url or self._config.endpoint_url

    def _secret_string(self, ref: AwsSecretRef) -> str:
        key = self._key(ref)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and self._clock() < hit[1]:
            return hit[0]
        value = self._read(ref, key)
        with self._lock:
            self._cache[key] = (value, self._clock() + self._config.ttl_s)
        return value

    def _read(self, ref: AwsSecretRef, key: _Key) -> str:
        try:
            answer = self._client(key[1], key[2]).get_secret_value(SecretId=ref.aws_secret)
        except ClientError as exc:
            raise SecretUnavailable(f"{describe(ref)}: {exc.response.get('Error', {}).get('Code', 'error')}") from None
        except BotoCoreError as exc:
            raise SecretUnavailable(f"{describe(ref)}: {type(exc).__name__}") from None
        if "SecretString" not in answer:
            raise SecretUnavailable(f"{describe(ref)}: no SecretString (binary secrets are not supported)")
        return answer["SecretString"]

    def _client(self, region: str, endpoint_url: str | None) -> Any:
        with self._lock:
            client = self._clients.get((region, endpoint_url))
            if client is None:  # a Session per client: boto3's default session is not thread-safe
                client = boto3.session.Session().client(
                    "secretsmanager", region_name=region, endpoint_url=endpoint_url, config=_CLIENT_CONFIG
                )
                self._clients[region, endpoint_url] = client
            return client


def _field(ref: AwsSecretRef, secret: str) -> str:
    """The whole SecretString, or with `ref.field` that field of the JSON object it holds."""
    if ref.field is None:
        return secret
    try:
        data = json.loads(secret)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise SecretUnavailable(f"{describe(ref)}: the secret is not a JSON object")
    value = data.get(ref.field)
    if not isinstance(value, str):
        problem = "has no field" if ref.field not in data else "has a non-string value in field"
        raise SecretUnavailable(f"{describe(ref)}: the JSON object {problem} `{ref.field}`")
    return value


def _field_or_none(ref: AwsSecretRef, cached: tuple[str, float] | None) -> str | None:
    try:
        return None if cached is None else _field(ref, cached[0])
    except SecretUnavailable:
        return None


def aws_refs(config: ProviderConfig) -> tuple[AwsSecretRef, ...]:
    """The provider's credentials that live in Secrets Manager (the only ones that can rotate under it)."""
    return tuple(c for f in PROVIDER_CREDENTIALS if isinstance(c := getattr(config, f), AwsSecretRef))


def rotates(config: ProviderConfig) -> bool:
    """Whether any of the provider's credentials is an AWS secret."""
    return bool(aws_refs(config))


def with_values(config: ProviderConfig, resolver: SecretResolver) -> ProviderConfig:
    """A copy whose credentials are their values (as SecretStr); for the adapters of this process only."""
    update = {f: SecretStr(v) for f in PROVIDER_CREDENTIALS if (v := resolver.resolve(getattr(config, f))) is not None}
    return config.model_copy(update=update)
