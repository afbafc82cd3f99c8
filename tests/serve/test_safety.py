"""Safety end to end with the official SDKs on the two-replica gateway: a blocked input is a 400 content_filter that
never reaches the provider; a blocked phrase split across streamed chunks never reaches the client (the stream
ends with content_filter, on the OpenAI and the Anthropic API); PII in Working Memory calls is redacted before
the emulator sees it; a dead external checker refuses the call; `/v1/gateway/redact`."""

from __future__ import annotations

import uuid

import anthropic
import httpx
import openai
import pytest

from tests.serve.keys import ADMIN, AUTH

pytestmark = pytest.mark.ray
MEMORY = {**AUTH, "x-gateway-daemon": "working_memory"}


def _client(url: str, org: str) -> openai.OpenAI:
    r = httpx.post(f"{url}/v1/gateway/keys", json={"name": f"safety-{uuid.uuid4().hex[:6]}", "org": org},
                   headers=ADMIN)  # fmt: skip
    assert r.status_code == 201, r.text
    return openai.OpenAI(base_url=f"{url}/v1", api_key=r.json()["key"], max_retries=0)


def _seen(emulator, marker: str) -> list[str]:
    """What the provider was sent, in the requests that carry `marker`."""
    return [str(r.body) for r in emulator.recorder.requests if marker in str(r.body)]


def test_a_blocked_input_is_a_400_naming_the_guard_and_never_reaches_the_provider(gateway_url, emulator):
    marker = uuid.uuid4().hex[:8]
    with _client(gateway_url, "safety-in") as client, pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=10, messages=[
            {"role": "user", "content": f"{marker}: tell me about Project\u200b  NIGHTINGALE"}])  # fmt: skip
    assert info.value.code == "content_filter" and "`words`" in info.value.message
    assert _seen(emulator, marker) == []


def test_a_phrase_split_across_streamed_chunks_never_reaches_the_client(gateway_url):
    with _client(gateway_url, "safety-out") as client:
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", max_tokens=30, stream=True, messages=[
            {"role": "user", "content": "say project nightingale is on"}]))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "nightingale" not in text.lower() and text.startswith("Hello from")  # what came before it went out
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_a_blocked_complete_answer_is_withheld_and_billed(gateway_url):
    with _client(gateway_url, "safety-out") as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", max_tokens=20, messages=[
            {"role": "user", "content": "say project nightingale is on"}])  # fmt: skip
    answer = raw.parse()
    assert answer.choices[0].finish_reason == "content_filter" and not answer.choices[0].message.content
    assert answer.usage.completion_tokens > 0 and float(raw.headers["x-gateway-cost-usd"]) > 0
    assert raw.headers["x-gateway-safety"] == "words=blocked"


def test_anthropic_streams_end_with_a_refusal(gateway_url):
    r = httpx.post(f"{gateway_url}/v1/gateway/keys", json={"name": "safety-a", "org": "safety-out"}, headers=ADMIN)
    client = anthropic.Anthropic(base_url=gateway_url, api_key=r.json()["key"], max_retries=0)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=30, messages=[
            {"role": "user", "content": "say project nightingale is on"}]) as stream:  # fmt: skip
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "nightingale" not in text.lower() and final.stop_reason == "refusal"


def test_working_memory_never_sends_raw_pii_to_the_provider(gateway_url, emulator):
    marker = uuid.uuid4().hex[:8]
    embed = httpx.post(f"{gateway_url}/v1/embeddings", headers=MEMORY, timeout=30, json={
        "model": "text-embedding-3-small", "input": [f"{marker} ann@example.com", "call +1 415 555 2671"]})  # fmt: skip
    assert embed.status_code == 200, embed.text
    assert embed.headers["x-gateway-safety"] == "pii=redacted:2"
    sent = _seen(emulator, marker)
    assert sent and "ann@example.com" not in sent[0] and "<EMAIL_1>" in sent[0] and "555 2671" not in sent[0]

    chat = httpx.post(f"{gateway_url}/v1/chat/completions", headers=MEMORY, timeout=30, json={
        "model": "gpt-4o-mini", "max_tokens": 20,
        "messages": [{"role": "user", "content": f"{marker}b remember bob@example.com"}]})  # fmt: skip
    assert chat.status_code == 200, chat.text
    assert "bob@example.com" not in " ".join(_seen(emulator, f"{marker}b"))
    assert "bob@example.com" not in chat.json()["choices"][0]["message"]["content"]


def test_a_dead_external_checker_refuses_the_call_and_forwards_nothing(gateway_url, emulator):
    marker = uuid.uuid4().hex[:8]
    with _client(gateway_url, "safety-dead") as client, pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=5, messages=[
            {"role": "user", "content": marker}])  # fmt: skip
    assert info.value.status_code == 503 and "dead-checker" in info.value.message
    assert info.value.body["type"] == "guard_unavailable"
    assert _seen(emulator, marker) == []


def test_the_redact_endpoint_answers_placeholders_and_spans(gateway_url):
    texts = ["mail ann@example.com", "again ann@example.com, card 4111 1111 1111 1111"]
    r = httpx.post(f"{gateway_url}/v1/gateway/redact", headers=AUTH, json={"texts": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["texts"] == ["mail <EMAIL_1>", "again <EMAIL_1>, card <CARD_1>"]
    span = body["findings"][1][1]
    assert texts[1][span["start"] : span["end"]] == "4111 1111 1111 1111" and span["entity"] == "card"
    bad = httpx.post(f"{gateway_url}/v1/gateway/redact", headers=AUTH, json={"texts": ["x"], "entities": ["dna"]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "entities.0"


def test_openai_hears_a_hashed_end_user_as_its_safety_identifier(gateway_url, emulator):
    marker = uuid.uuid4().hex[:8]
    body = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": marker}]}
    r = httpx.post(f"{gateway_url}/v1/chat/completions", headers={**AUTH, "x-gateway-user": "erin"}, json=body)
    assert r.status_code == 200, r.text
    sent = [r.body for r in emulator.recorder.requests if marker in str(r.body)]
    assert len(sent) == 1 and len(sent[0]["safety_identifier"]) == 32 and "erin" not in sent[0]["safety_identifier"]
