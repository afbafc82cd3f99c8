"""The lean transport sends what the official SDK sends: for each call, the emulator records both, and the method,
path, body and every header that matters (auth, API version, content type, accept, configured headers) agree."""

from __future__ import annotations

from dataclasses import replace

import openai
import pytest

from gateway.emulators import Emulator
from gateway.schema import ChatRequest, EmbeddingsRequest
from tests.contract.cases import LEAN, PRIMARY, Case

# Headers that differ by design: the SDK's own telemetry and identity, and what the HTTP client adds per connection.
IGNORED = {"user-agent", "content-length", "host", "connection", "accept-encoding"}
TOOL = {"name": "get_weather", "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}  # fmt: skip
IMAGE = {"type": "image", "data": "iVBORw0KGgo=", "media_type": "image/png"}
CALLS = {
    "plain": {"messages": [{"role": "user", "content": "plain"}]},
    "history": {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q1"},
                             {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}],
                "temperature": 0.2, "max_tokens": 50, "top_p": 0.9},
    "tools": {"messages": [{"role": "user", "content": "weather in Paris?"}], "tools": [TOOL], "tool_choice": "auto"},
    "json": {"messages": [{"role": "user", "content": "a json object"}], "response_format": {"type": "json_object"}},
    "image": {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is it?"}, IMAGE]}]},
}  # fmt: skip


def _headers(record) -> dict[str, str]:
    lowered = {k.lower(): v for k, v in record.headers.items()}
    return {k: v for k, v in lowered.items() if k not in IGNORED and not k.startswith("x-stainless")}


async def _capture(emulator: Emulator, case: Case, url: str, call) -> list:
    emulator.recorder.clear()
    provider = case.provider(url, headers={"OpenAI-Project": "proj-capture"})
    try:
        await call(provider)
    finally:
        await provider.aclose()
    return [(r.method, r.path, r.body, _headers(r)) for r in emulator.recorder.requests]


@pytest.fixture(params=[c for c in PRIMARY if c.kind in LEAN], ids=lambda c: c.id)
def lean_case(request) -> Case:
    return request.param


@pytest.mark.parametrize("name", [*CALLS, "stream"])
async def test_the_lean_transport_sends_what_the_sdk_sends(lean_case: Case, name: str, emulator, emulator_url):
    async def call(provider) -> None:
        request = ChatRequest(model="m", **CALLS.get(name, CALLS["history"]))
        if name == "stream":
            [e async for e in provider.stream(request, lean_case.target())]
        else:
            await provider.complete(request, lean_case.target())

    sdk = await _capture(emulator, _sdk(lean_case), emulator_url, call)
    lean = await _capture(emulator, lean_case, emulator_url, call)
    assert sdk and lean == sdk


async def test_embeddings_are_asked_for_as_the_sdk_asks_for_them(emulator, emulator_url):
    """The adapter's embeddings call against the SDK's own `embeddings.create` (base64, its default encoding)."""
    case = next(c for c in PRIMARY if c.embedding_model and c.kind == "openai")
    headers = {"OpenAI-Project": "proj-capture"}

    async def by_sdk(_) -> None:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=emulator_url + case.path, default_headers=headers)
        await client.embeddings.create(model=case.embedding_model, input=["one", "two"], dimensions=8)
        await client.close()

    async def by_adapter(provider) -> None:
        await provider.embed(EmbeddingsRequest(model="e", texts=("one", "two"), dimensions=8), case.embedding_target())

    sdk = await _capture(emulator, case, emulator_url, by_sdk)
    lean = await _capture(emulator, case, emulator_url, by_adapter)
    assert sdk and lean == sdk


def _sdk(case: Case) -> Case:
    return replace(case, transport="sdk")


async def test_the_lean_transport_decodes_the_same_vectors(emulator_url):
    case = next(c for c in PRIMARY if c.embedding_model and c.kind == "openai")
    request = EmbeddingsRequest(model="e", texts=("alpha", "beta", "gamma"), dimensions=16)
    answers = []
    for variant in (case, _sdk(case)):
        provider = variant.provider(emulator_url)
        try:
            answers.append(await provider.embed(request, case.embedding_target()))
        finally:
            await provider.aclose()
    assert answers[0].vectors == answers[1].vectors and answers[0].dimensions == 16
    assert answers[0].usage == answers[1].usage and answers[0].usage.input_tokens > 0
