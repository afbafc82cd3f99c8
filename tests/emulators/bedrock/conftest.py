"""Fixtures of the Bedrock emulator tests: boto3 `bedrock-runtime` clients pointed at the emulator."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import boto3
import pytest
from botocore.config import Config

from gateway.emulators import Emulator
from tests.emulators.bedrock.support import (
    Client,
)


@pytest.fixture(scope="module")
def make_client(emulator: Emulator) -> Iterator[Callable[..., Client]]:
    os.environ.pop("AWS_BEARER_TOKEN_BEDROCK", None)  # else botocore refuses a plain-HTTP endpoint
    made: dict[tuple[str, float], Client] = {}

    def make(region: str = "us-east-1", read_timeout: float = 5.0) -> Client:
        key = (region, read_timeout)
        if key not in made:
            made[key] = boto3.client(
                "bedrock-runtime",
                endpoint_url=f"{emulator.base_url}/bedrock",
                region_name=region,
                aws_access_key_id="test",
                aws_secret_access_key="test",
                config=Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout, connect_timeout=2),
            )
        return made[key]

    yield make
    for c in made.values():
        c.close()


@pytest.fixture(scope="module")
def brt(make_client: Callable[..., Client]) -> Client:
    return make_client()


@pytest.fixture(scope="module")
def quick(make_client: Callable[..., Client]) -> Client:
    return make_client(read_timeout=0.5)


@pytest.fixture(scope="module")
def url(emulator: Emulator) -> str:
    return f"{emulator.base_url}/bedrock"
