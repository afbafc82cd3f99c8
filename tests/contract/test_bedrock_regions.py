"""Bedrock regional routing: one adapter per region, each signing with an IAM role assumed via STS (local moto)."""

from __future__ import annotations

import socket

import pytest
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from gateway.config import ModelEntry, ProviderConfig
from gateway.providers.base import Target
from gateway.providers.registry import build_providers
from gateway.schema import ChatRequest, EmbeddingsRequest, ErrorKind, GatewayError

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE = "arn:aws:iam::123456789012:role/gateway-{}"


@pytest.fixture(scope="module")
def sts_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _config(emulator_url: str, sts_url: str, margin: float = 300) -> ProviderConfig:
    return ProviderConfig(
        kind="bedrock", base_url=f"{emulator_url}/bedrock", aws_access_key_id="AKIDEXAMPLEBASE",
        aws_secret_access_key="base-secret", sts_endpoint_url=sts_url, role_refresh_margin_s=margin,
        regions=[{"name": "eu-west-1", "role_arn": ROLE.format("eu")},
                 {"name": "us-east-1", "role_arn": ROLE.format("us")}],
    )  # fmt: skip


def _signed(emulator, marker: str) -> tuple[str, str]:
    """(region, access key id) of the request carrying `marker`, as the emulator received it."""
    record = next(r for r in reversed(emulator.recorder.requests) if marker in str(r.body))
    credential = record.headers["authorization"].split("Credential=")[1].split(",")[0].split("/")
    return record.region, credential[0]


async def _ask(provider, text: str) -> None:
    target = Target("claude", provider.name, ModelEntry(provider="bedrock", upstream=MODEL))
    await provider.complete(ChatRequest(model="claude", messages=[{"role": "user", "content": text}]), target)


async def test_each_region_signs_with_its_assumed_role_and_credentials_are_cached(emulator, emulator_url, sts_url):
    providers = build_providers("bedrock", _config(emulator_url, sts_url))
    assert list(providers) == ["bedrock@eu-west-1", "bedrock@us-east-1"]  # the region is part of the identity
    eu, us = providers.values()
    try:
        await _ask(eu, "regional probe eu one")
        await _ask(eu, "regional probe eu two")
        await _ask(us, "regional probe us")
    finally:
        await eu.aclose()
        await us.aclose()
    region_1, key_1 = _signed(emulator, "regional probe eu one")
    region_2, key_2 = _signed(emulator, "regional probe eu two")
    region_3, key_3 = _signed(emulator, "regional probe us")
    assert (region_1, region_2, region_3) == ("eu-west-1", "eu-west-1", "us-east-1")
    assert key_1 != "AKIDEXAMPLEBASE" and key_1.startswith("ASIA")  # temporary credentials from STS, not the base key
    assert key_1 == key_2  # cached: one AssumeRole, not one per request
    assert key_3 != key_1  # the other region assumed its own role


async def test_credentials_are_refreshed_before_they_expire(emulator, emulator_url, sts_url):
    # STS grants an hour; with a refresh margin longer than that, every call is "about to expire".
    provider = build_providers("bedrock", _config(emulator_url, sts_url, margin=4000))["bedrock@eu-west-1"]
    try:
        await _ask(provider, "refresh probe one")
        await _ask(provider, "refresh probe two")
    finally:
        await provider.aclose()
    assert _signed(emulator, "refresh probe one")[1] != _signed(emulator, "refresh probe two")[1]


async def test_a_models_guardrail_is_passed_through_and_its_intervention_is_content_filtered(emulator, emulator_url):
    config = ProviderConfig(kind="bedrock", base_url=f"{emulator_url}/bedrock", aws_access_key_id="AKIDEXAMPLEBASE",
                            aws_secret_access_key="base-secret", regions=[{"name": "us-east-1"}])  # fmt: skip
    provider = build_providers("bedrock", config)["bedrock@us-east-1"]
    entry = ModelEntry(provider="bedrock", upstream=f"{MODEL}-fault-guardrail",
                       guardrail={"identifier": "gr-pii", "version": "3", "trace": True})  # fmt: skip
    request = ChatRequest(model="claude", messages=[{"role": "user", "content": "guardrail probe"}])
    try:
        with pytest.raises(GatewayError) as info:
            await provider.complete(request, Target("claude", provider.name, entry))
    finally:
        await provider.aclose()
    assert info.value.kind is ErrorKind.CONTENT_FILTERED and info.value.provider_code == "guardrail_intervened"
    sent = next(r for r in reversed(emulator.recorder.requests) if "guardrail probe" in str(r.body))
    assert sent.body["guardrailConfig"] == {
        "guardrailIdentifier": "gr-pii",
        "guardrailVersion": "3",
        "trace": "enabled",
    }


async def test_cohere_embeddings_are_batched_by_96_with_the_input_type(emulator, emulator_url):
    config = ProviderConfig(kind="bedrock", base_url=f"{emulator_url}/bedrock", aws_access_key_id="AKIDEXAMPLEBASE",
                            aws_secret_access_key="base-secret", regions=[{"name": "us-east-1"}])  # fmt: skip
    provider = build_providers("bedrock", config)["bedrock@us-east-1"]
    entry = ModelEntry(provider="bedrock", upstream="cohere.embed-english-v3", kind="embedding")
    texts = tuple(f"cohere batch probe {i}" for i in range(100))
    try:
        out = await provider.embed(EmbeddingsRequest(model="c", texts=texts, input_type="query"),
                                   Target("c", provider.name, entry))  # fmt: skip
    finally:
        await provider.aclose()
    assert len(out.vectors) == 100 and out.dimensions == 1024 and out.usage.input_tokens > 0
    sent = [r.body for r in emulator.recorder.requests if "cohere batch probe" in str(r.body)]
    assert sorted(len(b["texts"]) for b in sent) == [4, 96]
    assert {b["input_type"] for b in sent} == {"search_query"}
