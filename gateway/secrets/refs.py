"""The forms a credential takes in configuration: a value, `${ENV}` (local development) or an AWS secret reference.

References stay references in the config that is handed to Ray (the deployment's arguments); they are resolved
inside the process that uses them, so no secret value sits in Serve's controller state."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Ref(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AwsSecretRef(_Ref):
    """A value in AWS Secrets Manager: the whole SecretString, or one `field` of it when it is a JSON object."""

    aws_secret: str = Field(min_length=1)  # a name or an ARN
    field: str | None = None
    region: str | None = None  # else `secrets.region`
    endpoint_url: str | None = None  # else `secrets.endpoint_url` (a local server in tests)


class EnvRef(_Ref):
    """`${NAME}` / `${NAME:-default}` in a credential field: read from the environment of the process that uses it."""

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    default: str = ""

    def value(self) -> str:
        return os.environ.get(self.env) or self.default


Credential = SecretStr | AwsSecretRef | EnvRef


def is_set(cred: Credential | None) -> bool:
    """Whether a credential is configured (an AWS reference counts; an empty value or unset variable does not)."""
    if cred is None:
        return False
    if isinstance(cred, SecretStr):
        return bool(cred.get_secret_value())
    if isinstance(cred, EnvRef):
        return bool(cred.value())
    return True


def describe(cred: Credential | None) -> str:
    """A safe description of where a credential comes from (never its value)."""
    if cred is None:
        return "none"
    if isinstance(cred, AwsSecretRef):
        return f"aws secret {cred.aws_secret}" + (f" field {cred.field}" if cred.field else "")
    if isinstance(cred, EnvRef):
        return f"environment variable {cred.env}"
    return "a value in the config"


def value_of(cred: Credential | None) -> str | None:
    """The value of a credential already resolved to a SecretStr (`resolver.with_values`); a reference is refused."""
    if cred is None:
        return None
    if isinstance(cred, SecretStr):
        return cred.get_secret_value()
    raise TypeError(f"an unresolved credential ({describe(cred)}): build adapters from `with_values(config, resolver)`")
