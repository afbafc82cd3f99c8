"""The gateway's configuration file: providers, model catalog, server settings; load, validate, resolve offline."""

from __future__ import annotations

import logging
import os
import re
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from gateway.secrets.refs import Credential, is_set

log = logging.getLogger("gateway.config")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# What each SDK's base URL is under the emulator, for offline mode.
EMULATOR_PATHS = MappingProxyType(
    {"openai": "/openai/v1", "anthropic": "/anthropic", "gemini": "/gemini/", "bedrock": "/bedrock"}
)
OFFLINE_API_KEY = "offline-emulator-key"
# Fields that hold credentials: a `${VAR}` there stays a reference (read where it is used, not on the driver).
CREDENTIAL_FIELDS = frozenset({"api_key", "aws_access_key_id", "aws_secret_access_key", "pepper", "admin_keys"})
ProviderKind = Literal["openai", "anthropic", "gemini", "bedrock"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    """Seconds. `read` bounds upstream silence between bytes; `total` bounds a whole call."""

    connect: float = Field(default=5.0, gt=0)
    read: float = Field(default=60.0, gt=0)
    total: float = Field(default=300.0, gt=0)
    first_token: float = Field(default=60.0, gt=0)  # a stream's first content token (then `read` bounds the gaps)


class TimeoutOverrides(_Strict):
    """Per-model or per-task-class bounds enforced by the pipeline (connect/read stay per provider)."""

    first_token: float | None = Field(default=None, gt=0)
    total: float | None = Field(default=None, gt=0)


class BedrockRegion(_Strict):
    """One Bedrock region; calls there are signed with credentials of `role_arn` (assumed via STS) if given."""

    name: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    role_arn: str | None = None


class ProviderConfig(_Strict):
    kind: ProviderKind
    base_url: str | None = None
    api_key: Credential | None = None
    timeouts: Timeouts = Timeouts()
    max_connections: int = Field(default=1000, ge=1)
    # Bedrock only: regions in order of preference, base AWS credentials (else boto3's default chain),
    # an STS endpoint override, and how long before expiry assumed-role credentials are refreshed.
    regions: tuple[BedrockRegion, ...] = ()
    aws_access_key_id: Credential | None = None
    aws_secret_access_key: Credential | None = None
    sts_endpoint_url: str | None = None
    role_refresh_margin_s: float = Field(default=300.0, ge=0)
    # The account's rate limits (per region for Bedrock), leased to replicas by the provider actor.
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    # Prompt estimates for this provider: the o200k count times this (default by kind: 1.0 OpenAI, 1.2 Anthropic,
    # 1.15 Gemini, 1.25 Bedrock).
    token_margin: float | None = Field(default=None, ge=1.0, le=3.0)
    # Extra HTTP headers on every upstream call (an OpenAI-Project, a proxy's routing header; not for Bedrock,
    # whose requests are signed).
    headers: dict[str, str] = {}
    # How the openai and anthropic adapters send HTTP: `fast` (their own aiohttp session speaking the SDK's wire
    # format; the default) or `sdk` (through the official SDK's client). Gemini and Bedrock use their SDKs.
    transport: Literal["fast", "sdk"] | None = None

    @model_validator(mode="after")
    def _bedrock_has_regions(self) -> ProviderConfig:
        if self.kind == "bedrock" and not self.regions:
            raise ValueError("a bedrock provider needs `regions` (at least one)")
        if self.kind != "bedrock" and (self.regions or self.sts_endpoint_url):
            raise ValueError("`regions` and `sts_endpoint_url` are for bedrock providers only")
        if self.kind == "bedrock" and self.headers:
            raise ValueError("`headers` are not supported for bedrock providers (their requests are signed)")
        if self.transport == "fast" and self.kind in ("gemini", "bedrock"):
            raise ValueError("`transport: fast` exists for openai and anthropic providers (gemini and bedrock: sdk)")
        return self

    @property
    def has_credentials(self) -> bool:
        if self.kind == "bedrock":
            return is_set(self.aws_access_key_id)
        return is_set(self.api_key)


class Capabilities(_Strict):
    tools: bool = True
    json_mode: bool = True
    images: bool = False
    streaming: bool = True
    prefill: bool = False


class Guardrail(_Strict):
    """A Bedrock guardrail applied to every call of a model (passed through as Converse's guardrailConfig)."""

    identifier: str
    version: str = "DRAFT"
    trace: bool = False


class ModelEntry(_Strict):
    """A public model name and where it is served."""

    provider: str
    upstream: str
    kind: Literal["chat", "embedding"] = "chat"
    api: Literal["chat", "responses"] = "chat"
    context_window: int = Field(default=128_000, ge=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    dimensions: int | None = Field(default=None, ge=1)
    capabilities: Capabilities = Capabilities()
    guardrail: Guardrail | None = None  # Bedrock only
    timeouts: TimeoutOverrides = TimeoutOverrides()
    price_as: str | None = None  # the upstream id whose price applies (an alias, a deployment name, a fine-tune)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    replicas: int = Field(default=1, ge=1)
    max_ongoing_requests: int = Field(default=1000, ge=1)
    max_queued_requests: int = Field(default=2000, ge=-1)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    # Serve's access log (a line per request in the replica's log): off by default, since every request already
    # leaves an audit event with its caller. On, the replica's Serve logger runs at INFO (else at WARNING).
    access_log: bool = False


class Price(_Strict):
    """US dollars per million tokens (Decimal: money is never a float here)."""

    input_mtok: Decimal = Field(ge=0)
    output_mtok: Decimal = Field(default=Decimal(0), ge=0)
    cache_read_mtok: Decimal | None = Field(default=None, ge=0)
    cache_write_mtok: Decimal | None = Field(default=None, ge=0)


class PricingConfig(_Strict):
    """Prices come from genai-prices, then from `table` (models it lacks). A model priced by neither is refused
    before any call (`unknown_model: refuse`) or charged `default` — never recorded as $0."""

    table: str | None = "policies/prices.yaml"  # relative: to the working directory, else the project
    unknown_model: Literal["refuse", "default"] = "refuse"
    default: Price | None = None

    @model_validator(mode="after")
    def _default_given(self) -> PricingConfig:
        if self.unknown_model == "default" and self.default is None:
            raise ValueError("pricing.default: required when unknown_model is `default`")
        return self


class DynamoConfig(_Strict):
    """The DynamoDB spend store: its table (partition key `pk`, a string), region and, for a local server, endpoint.
    Credentials come from boto3's default chain; `create_table` (development, tests) creates a missing table."""

    table: str = "llm-gateway-spend"
    region: str = "us-east-1"
    endpoint_url: str | None = None
    create_table: bool = False


class BudgetsConfig(_Strict):
    """Budgets are off unless `policy` names a budgets file. Settled spend goes to `store` (SQLite, WAL), or with
    `backend: dynamodb` to the `dynamodb` table (exact and idempotent even with several writers)."""

    policy: str | None = None  # e.g. policies/budgets.yaml
    store: str = "~/.cache/llm-gateway/spend.db"
    lease_usd: Decimal = Field(default=Decimal("0.50"), gt=0)  # how much a replica leases at a time
    lease_tokens: int = Field(default=200_000, gt=0)
    backend: Literal["sqlite", "dynamodb"] = "sqlite"
    dynamodb: DynamoConfig = DynamoConfig()
    # The output reserved for a call without max_tokens on a model without a catalog maximum; a stream that
    # goes past it extends its reservation by as much again, while its budgets have room.
    default_output_tokens: int = Field(default=4096, ge=1)


class LimitsConfig(_Strict):
    """Rate limits per key, org and user (`gateway.limits`): the rules in `policy` (a limits file) and each key's
    own `limits`. Bucket levels live in `store` (SQLite, the embedded default) or, with `backend: dynamodb`, in the
    `dynamodb` table that several clusters share. `on_store_error`: while the bucket owner or its store cannot be
    reached, `local` serves each replica from a bucket of capacity / replicas; `fail_closed` refuses (503)."""

    policy: str | None = None  # e.g. policies/limits.yaml
    store: str = "~/.cache/llm-gateway/limits.db"
    backend: Literal["embedded", "dynamodb"] = "embedded"
    dynamodb: DynamoConfig = DynamoConfig(table="llm-gateway-limits")
    on_store_error: Literal["local", "fail_closed"] = "local"


class SafetyConfig(_Strict):
    """Guards on input, output, the stream and embeddings inputs (`gateway.safety`): the rules in `policy` (a safety
    file). Without one, no guard runs."""

    policy: str | None = None  # e.g. policies/safety.yaml


class SecretsConfig(_Strict):
    """AWS Secrets Manager, for credentials given as `{aws_secret: ...}`: the default region and endpoint (a local
    server in tests), and how long a value read is kept before it is read again."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    ttl_s: float = Field(default=300.0, gt=0)


class JwtClaims(_Strict):
    """Which claim of a token holds each part of the caller's identity (a list claim or a space-separated string)."""

    org: str = "org"
    user: str = "sub"
    daemons: str = "daemons"
    models: str = "models"
    scopes: str = "scope"
    budget_tier: str = "budget_tier"


class JwtConfig(_Strict):
    """JWT / OIDC callers: tokens signed by `issuer` for `audience`, verified with keys from a JWKS file or URL."""

    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    algorithms: tuple[str, ...] = ("RS256",)
    jwks_file: str | None = None
    jwks_url: str | None = None
    jwks_cache_s: float = Field(default=300.0, gt=0)
    leeway_s: float = Field(default=30.0, ge=0)
    claims: JwtClaims = JwtClaims()
    default_scopes: tuple[Literal["chat", "embeddings", "admin"], ...] = ("chat", "embeddings")

    @model_validator(mode="after")
    def _keys_and_algorithms(self) -> JwtConfig:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("auth.jwt: give exactly one of `jwks_file` or `jwks_url`")
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
        bad = [a for a in self.algorithms if a not in allowed]
        if bad or not self.algorithms:
            raise ValueError(f"auth.jwt.algorithms: asymmetric algorithms only ({', '.join(sorted(allowed))}); "
                             f"not {', '.join(bad) or 'an empty list'}")  # fmt: skip
        return self


class CorsConfig(_Strict):
    """Browser callers: origins, methods and headers named explicitly (no `*`)."""

    origins: tuple[str, ...] = Field(min_length=1)
    methods: tuple[str, ...] = ("GET", "POST")
    headers: tuple[str, ...] = ("authorization", "content-type")
    max_age_s: int = Field(default=600, ge=0)

    @field_validator("origins", "methods", "headers")
    @classmethod
    def _no_wildcards(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any("*" in v for v in value):
            raise ValueError("name each one; `*` is not accepted")
        return value


class AuthConfig(_Strict):
    """Who may call. `keys`: gateway API keys (and JWTs if `jwt` is set); `open`: any token, identity from headers —
    only offline on a loopback address; `auto`: open there, keys everywhere else. LLM_GATEWAY_AUTH overrides."""

    mode: Literal["auto", "keys", "open"] = "auto"
    pepper: Credential | None = None  # HMAC key of stored key hashes; else the file `pepper_file`
    pepper_file: str = "~/.cache/llm-gateway/key-pepper"
    admin_keys: tuple[Credential, ...] = ()  # bootstrap admin keys (LLM_GATEWAY_ADMIN_KEY is one more)
    backend: Literal["sqlite", "dynamodb"] = "sqlite"
    store: str = "~/.cache/llm-gateway/keys.db"
    dynamodb: DynamoConfig = DynamoConfig(table="llm-gateway-keys")
    cache_hit_s: float = Field(default=30.0, gt=0, le=30)  # a key found: re-read at least this often
    cache_miss_s: float = Field(default=5.0, gt=0, le=5)  # a key not found: asked again after this
    jwt: JwtConfig | None = None
    cors: CorsConfig | None = None


class ControlConfig(_Strict):
    """The actor control plane: named actors in `namespace`; replicas sync with them every `interval_s`."""

    enabled: bool = True
    namespace: str = "llm_gateway"
    interval_s: float = Field(default=0.5, gt=0)
    stale_after_s: float = Field(default=10.0, gt=0)  # older snapshots: shared breaker states are ignored


class EmulatorConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8900, ge=0, le=65535)
    ttft_ms: int = Field(default=0, ge=0)
    inter_token_ms: int = Field(default=0, ge=0)


class GatewayConfig(_Strict):
    offline: Literal["auto", True, False] = "auto"
    server: ServerConfig = ServerConfig()
    emulator: EmulatorConfig = EmulatorConfig()
    control: ControlConfig = ControlConfig()
    pricing: PricingConfig = PricingConfig()
    budgets: BudgetsConfig = BudgetsConfig()
    limits: LimitsConfig = LimitsConfig()
    safety: SafetyConfig = SafetyConfig()
    auth: AuthConfig = AuthConfig()
    secrets: SecretsConfig = SecretsConfig()
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelEntry]
    routing_policy: str | None = None  # path of the routing policy YAML (relative: to the working directory)

    @model_validator(mode="after")
    def _models_name_providers(self) -> GatewayConfig:
        for name, entry in self.models.items():
            if entry.provider not in self.providers:
                raise ValueError(f"models.{name}.provider: unknown provider `{entry.provider}`")
            if entry.kind == "embedding" and entry.api != "chat":
                raise ValueError(f"models.{name}.api: embedding models have no `{entry.api}` API")
        return self

    @property
    def is_offline(self) -> bool:
        if self.offline == "auto":
            return not any(p.has_credentials for p in self.providers.values())
        return bool(self.offline)

    def resolved(self, emulator_url: str | None) -> GatewayConfig:
        """This config with every provider pointed at the emulator when offline."""
        if not self.is_offline:
            return self
        if emulator_url is None:
            raise ConfigError("offline mode needs a running emulator (no emulator URL given)")
        base = emulator_url.rstrip("/")
        offline = {"api_key": SecretStr(OFFLINE_API_KEY), "aws_access_key_id": SecretStr("offline"),
                   "aws_secret_access_key": SecretStr("offline"), "sts_endpoint_url": None}  # fmt: skip
        providers = {
            name: p.model_copy(
                update={
                    **offline,
                    "base_url": base + EMULATOR_PATHS[p.kind],
                    "regions": tuple(r.model_copy(update={"role_arn": None}) for r in p.regions),  # no STS offline
                }
            )
            for name, p in self.providers.items()
        }
        return self.model_copy(update={"providers": providers, "offline": True})


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and field."""


def _expand_env(value: Any, credential: bool = False) -> Any:
    """`${VAR}` / `${VAR:-default}` replaced from the environment; in a credential field a value that is exactly one
    reference stays one (`{"env": VAR, "default": ...}`), resolved by the process that uses it."""
    if isinstance(value, str):
        whole = _ENV_REF.fullmatch(value)
        if credential and whole:
            return {"env": whole.group(1), "default": whole.group(2) or ""}
        return _ENV_REF.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        if credential:  # a reference such as {aws_secret: ..., region: ${AWS_REGION}}: expand its parts
            return {k: _expand_env(v) for k, v in value.items()}
        return {k: _expand_env(v, k in CREDENTIAL_FIELDS) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, credential) for v in value]
    return value


def parse_config(data: Any, source: str = "<config>") -> GatewayConfig:
    """Validate already-loaded YAML/JSON data; `${VAR}` and `${VAR:-default}` are expanded first."""
    try:
        return GatewayConfig.model_validate(_expand_env(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None


def load_config(path: str | Path | None = None) -> GatewayConfig:
    """Load the config file (default: the bundled offline-capable config)."""
    file = Path(path) if path else default_config_path()
    try:
        data = yaml.safe_load(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    return parse_config(data, str(file))


def default_config_path() -> Path:
    return Path(__file__).parent / "defaults" / "gateway.yaml"
