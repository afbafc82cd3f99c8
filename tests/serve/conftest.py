"""One gateway on one Ray instance for the whole test session, configured offline against the emulator."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest

from launcher.runtime import apply_ray_env

apply_ray_env()  # before anything imports ray

from gateway.auth.registry import KeyRegistry  # noqa: E402
from gateway.auth.setup import ADMIN_KEY_ENV  # noqa: E402
from gateway.auth.store import SqliteKeyStore  # noqa: E402
from gateway.config import GatewayConfig, parse_config  # noqa: E402
from gateway.secrets.refs import AwsSecretRef  # noqa: E402
from launcher import runtime  # noqa: E402
from launcher.cli import wait_http  # noqa: E402
from tests.moto_support import moto_server  # noqa: E402
from tests.serve import keys  # noqa: E402
from tests.support import catalog_with_faults  # noqa: E402

HEARTBEAT_S = 0.15
READ_TIMEOUT_S = 2.0
REPLICAS = 2
SYNC_S = 0.2  # replica <-> control plane sync interval
LIMITED_RPM = 5
PACED_MS = 100  # between the tokens of `paced-mini`
DEFAULT_OUTPUT = 8  # output reserved for a budgeted call without max_tokens (small: streams extend it)
POLICY_SOURCE = Path(__file__).parent / "routing_policy.yaml"
VAULT_SECRET = "llm-gateway/tests/openai"  # the `openai-vault` provider's key lives here, in the local moto server
PEPPER_ENV = "LLM_GATEWAY_TEST_PEPPER"  # the key pepper reaches the replicas as a ${ENV} reference, never a value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def policy_file(tmp_path_factory) -> Path:
    """A copy of the test routing policy that a test may edit and reload (and must restore)."""
    file = tmp_path_factory.mktemp("policy") / "routing.yaml"
    file.write_text(POLICY_SOURCE.read_text())
    return file


@pytest.fixture(scope="session")
def key_store(tmp_path_factory) -> Path:
    """The session's key store, seeded with the operations key (tests.serve.keys)."""
    path = tmp_path_factory.mktemp("keys") / "keys.db"
    store = SqliteKeyStore(path)
    KeyRegistry(store).create(keys.ops_record())
    store.close()
    return path


@pytest.fixture(scope="session")
def secrets_manager(tmp_path_factory):
    """A local Secrets Manager (moto, real HTTP) for the whole session, with the vault provider's key in it; its
    fake AWS credentials are in the environment Ray starts with, so the replicas' boto3 finds them."""
    import boto3

    with moto_server(tmp_path_factory.mktemp("aws")) as url:
        client = boto3.client("secretsmanager", endpoint_url=url, region_name="us-east-1")
        client.create_secret(Name=VAULT_SECRET, SecretString=json.dumps({"api_key": keys.VAULT_KEY}))
        yield client


def _with_vault(config: GatewayConfig, endpoint: str) -> GatewayConfig:
    """The offline config with the `openai-vault` provider's key read from Secrets Manager instead."""
    vault = config.providers["openai-vault"].model_copy(
        update={"api_key": AwsSecretRef(aws_secret=VAULT_SECRET, field="api_key", endpoint_url=endpoint)}
    )
    return config.model_copy(update={"providers": {**config.providers, "openai-vault": vault}})


@pytest.fixture(scope="session")
def gateway_url(emulator_url: str, policy_file: Path, key_store: Path, secrets_manager, tmp_path_factory) -> str:
    # Both reach the replicas through the environment Ray starts with (never as deployment arguments).
    os.environ[ADMIN_KEY_ENV] = keys.ADMIN_KEY
    os.environ[PEPPER_ENV] = keys.PEPPER
    config = parse_config(
        {
            "offline": True,
            "auth": {"mode": "keys", "store": str(key_store), "pepper": "${" + PEPPER_ENV + "}"},
            # two replicas: breakers, snapshots and leases are shared through the control-plane actors
            "server": {"port": _free_port(), "heartbeat_interval_s": HEARTBEAT_S, "replicas": REPLICAS},
            "control": {"interval_s": SYNC_S},
            "providers": {
                "openai": {"kind": "openai", "timeouts": {"connect": 2, "read": READ_TIMEOUT_S, "total": 30}},
                # a patient provider, so a test can tell client-disconnect cancellation from a read timeout
                "openai-patient": {"kind": "openai", "timeouts": {"connect": 2, "read": 60, "total": 120}},
                "openai-limited": {"kind": "openai", "rpm": LIMITED_RPM},  # a small account: 5 requests a minute
                "anthropic": {"kind": "anthropic", "timeouts": {"connect": 2, "read": READ_TIMEOUT_S, "total": 30}},
                # a paced, longer answer (the emulator obeys these headers): a budget can cut it mid-way exactly
                "openai-paced": {
                    "kind": "openai",
                    "headers": {"x-emulator-inter-token-ms": str(PACED_MS), "x-emulator-tokens": "40"},
                },
                "openai-vault": {"kind": "openai"},  # its key: from Secrets Manager (_with_vault)
                "gemini": {"kind": "gemini", "timeouts": {"connect": 2, "read": READ_TIMEOUT_S, "total": 30}},
                "bedrock": {
                    "kind": "bedrock",
                    "regions": [{"name": "us-east-1"}, {"name": "eu-west-1"}],
                    "timeouts": {"connect": 2, "read": READ_TIMEOUT_S, "total": 30},
                },
            },
            "routing_policy": str(policy_file),
            "budgets": {
                "policy": str(Path(__file__).parent / "budgets.yaml"),
                "store": str(tmp_path_factory.mktemp("ledger") / "spend.db"),
                "default_output_tokens": DEFAULT_OUTPUT,
            },
            "safety": {"policy": str(Path(__file__).parent / "safety.yaml")},
            "limits": {
                "policy": str(Path(__file__).parent / "limits.yaml"),
                "store": str(tmp_path_factory.mktemp("limits") / "limits.db"),
            },
            "models": {
                **catalog_with_faults(),
                "patient-stall": {
                    "provider": "openai-patient",
                    "upstream": "gpt-4o-mini-fault-stall",
                    "price_as": "gpt-4o-mini",
                },
                # switched down and up again by the emulator's outage control
                "flaky-primary": {"provider": "openai", "upstream": "flaky-upstream", "price_as": "gpt-4o-mini"},
                "blip-primary": {"provider": "openai", "upstream": "blip-upstream", "price_as": "gpt-4o-mini"},
                "unpriced": {"provider": "openai", "upstream": "mystery-model"},  # no price anywhere: refused
                "paced-mini": {"provider": "openai-paced", "upstream": "gpt-4o-mini"},
                # sends three tokens, then waits for the client to leave
                "claude-stall": {
                    "provider": "anthropic",
                    "upstream": "claude-haiku-4-5-fault-stall",
                    "price_as": "claude-haiku-4-5",
                },
                # gives up on a slow first token long before the provider's read timeout
                "impatient-slow": {
                    "provider": "openai",
                    "upstream": "gpt-4o-mini-fault-slow-first-token",
                    "timeouts": {"first_token": 0.25},
                    "price_as": "gpt-4o-mini",
                },
                "limited-mini": {"provider": "openai-limited", "upstream": "gpt-4o-mini"},
                "vault-mini": {"provider": "openai-vault", "upstream": "gpt-4o-mini"},
                # fresh breakers for the bounded-retry tests (other tests open the fault models' breakers)
                **{
                    f"bounded-{f}": {
                        "provider": "openai",
                        "upstream": f"gpt-4o-mini-fault-{f}",
                        "price_as": "gpt-4o-mini",
                    }
                    for f in ("429", "429-no-retry-after", "reset", "503")
                },
            },
        },
        "tests/serve",
    ).resolved(emulator_url)
    config = _with_vault(config, secrets_manager.meta.endpoint_url)
    runtime.start_ray(num_cpus=2)
    try:
        base = runtime.deploy(config)
        assert wait_http(f"{base}/readyz", 120), "gateway did not become ready"
        yield base
    finally:
        runtime.stop_ray()
        os.environ.pop(ADMIN_KEY_ENV, None)
        os.environ.pop(PEPPER_ENV, None)


@pytest.fixture()
def gw(gateway_url: str):
    from openai import OpenAI

    with OpenAI(base_url=f"{gateway_url}/v1", api_key=keys.OPS_KEY, max_retries=0, timeout=20) as client:
        yield client


@pytest.fixture()
def upstream(emulator_url: str):
    """The official SDK pointed straight at the emulator: the answer the gateway must reproduce."""
    from openai import OpenAI

    with OpenAI(base_url=f"{emulator_url}/openai/v1", api_key="sk-test", max_retries=0, timeout=20) as client:
        yield client


def get_json(url: str) -> object:
    import json

    with urllib.request.urlopen(urllib.request.Request(url, headers=keys.AUTH), timeout=5) as r:
        return json.loads(r.read())
