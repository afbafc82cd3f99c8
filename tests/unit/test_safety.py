"""Safety guards without Ray: each PII detector on valid and invalid samples, blocklist evasions, placeholders, the
stream window (a phrase split at every chunk boundary is caught, nothing beyond the window is held), fail-closed
and fail-open guards, and which profile a call gets."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from gateway.safety.blocklist import Blocklist
from gateway.safety.normalize import normalize
from gateway.safety.pii import ENTITIES, find
from gateway.safety.policy import SafetyPolicy
from gateway.safety.screen import Safety
from gateway.schema import ChatRequest, ChatResponse, ErrorKind, GatewayError, TextDelta, Usage
from gateway.schema.chat import GatewayMetadata
from gateway.schema.events import FinishEvent, StartEvent, ToolCallDelta
from gateway.schema.principal import Principal

ALL = frozenset(ENTITIES)
FAKE_AWS = "AKIA" + "FAKE" * 4  # the shape of an AWS access key id, plainly not one
FAKE_OPENAI = "sk-proj-" + "fake" * 8
FAKE_GITHUB = "ghp_" + "FAKE" * 9


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [
        ("write to jane.roe+inbox@mail.example.org now", "email", "jane.roe+inbox@mail.example.org"),
        ("call +44 20 7946 0958 tomorrow", "phone", "+44 20 7946 0958"),
        ("call (415) 555-2671 tomorrow", "phone", "(415) 555-2671"),
        ("card 4111 1111 1111 1111 exp 12/29", "card", "4111 1111 1111 1111"),
        ("card 5500-0000-0000-0004.", "card", "5500-0000-0000-0004"),
        ("pay to DE89 3704 0044 0532 0130 00 please", "iban", "DE89 3704 0044 0532 0130 00"),
        ("pay to GB82WEST12345698765432 please", "iban", "GB82WEST12345698765432"),
        ("ssn 536-90-4399 on file", "ssn", "536-90-4399"),
        ("DNI 12345678Z", "national_id", "12345678Z"),
        ("codice RSSMRA85T10A562S", "national_id", "RSSMRA85T10A562S"),
        ("from 10.0.12.7 via", "ip", "10.0.12.7"),
        ("from 2001:db8::8a2e:370:7334 via", "ip", "2001:db8::8a2e:370:7334"),
        # key shapes built from obvious fakes (the detectors look at the shape, not at whether a key is real)
        ("key " + FAKE_AWS + " leaked", "aws_key", FAKE_AWS),
        ("token " + FAKE_OPENAI, "api_key", FAKE_OPENAI),
        ("token " + FAKE_GITHUB + " here", "api_key", FAKE_GITHUB),
    ],
)
def test_each_detector_finds_its_entity(text, entity, value):
    spans = find(text, ALL)
    assert [(text[s.start : s.end], s.entity) for s in spans] == [(value, entity)]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "pay to DE89 3704 0044 0532 0130 01 (bad checksum)",
        "ssn 000-12-3456 and 666-12-3456 are never issued",
        "version 1.2.3.4.5 and 999.1.1.1 and 12:30:45",
        "DNI 12345678A has the wrong letter",
        "order 12345678, invoice 2026-12-04, total 1,234.56",
        "plain prose about apples and the weather",
    ],
)
def test_look_alikes_are_not_pii(text):
    assert find(text, ALL) == []


def test_only_the_asked_entities_are_looked_for():
    text = "mail a@b.io or call +1 415 555 2671"
    assert [s.entity for s in find(text, frozenset({"email"}))] == ["email"]


FULLWIDTH = {c: c + 0xFEE0 for c in range(ord("a"), ord("z") + 1)}  # `a` -> U+FF41 ...
EVASIONS = ["Project NIGHTINGALE", "project\u200b nightingale", "project nightingale".translate(FULLWIDTH),
            "project   \n nightingale", "pro\u00adject night\u200dingale"]  # fmt: skip


@pytest.mark.parametrize("evasion", EVASIONS)
def test_a_blocklist_sees_through_trivial_evasions(evasion):
    assert Blocklist(phrases=["project nightingale"]).find(f"about {evasion}, quietly") is not None


def test_a_term_matches_whole_words_only_and_regexes_see_normalized_text():
    bl = Blocklist(terms=["ass"], regexes=[r"ticket-\d{6}"])
    assert bl.find("a class assignment") is None
    assert bl.find("you ASS") == "term `ass`"
    assert bl.find("see TICKET-123456") == "regex `ticket-\\d{6}`"
    assert normalize("A\u200bB  C") == "ab c"


POLICY = {
    "guards": {
        "words": {"kind": "blocklist", "phrases": ["project nightingale"], "terms": ["darn"]},
        "pii": {"kind": "pii", "entities": {"email": "redact", "phone": "redact", "card": "block"}},
        "dead": {"kind": "http", "url": "http://127.0.0.1:9/check", "timeout_ms": 300},
        "dead-open": {"kind": "http", "url": "http://127.0.0.1:9/check", "timeout_ms": 300, "on_error": "fail_open"},
    },
    "profiles": {
        "strict": {
            "input": ["words", "pii"],
            "output": ["words", "pii"],
            "stream": ["words", "pii"],
            "embeddings_input": ["pii"],
        },
        "checked": {"input": ["dead"]},
        "lenient": {"input": ["dead-open"]},
    },
    "select": [
        {"daemon": "working_memory", "profile": "strict"},
        {"org": "acme", "key": "k-checked", "profile": "checked"},
        {"org": "acme", "key": "k-lenient", "profile": "lenient"},
        {"org": "acme", "profile": "strict"},
    ],
}


def _meta(org: str | None = None, key: str | None = None, daemon: str | None = None) -> GatewayMetadata:
    principal = Principal(key_id=key, via="key", org=org) if key else None
    return GatewayMetadata(org=org, daemon=daemon, principal=principal)


def _chat(*texts: str) -> ChatRequest:
    return ChatRequest(model="gpt-4o-mini", messages=[{"role": "user", "content": t} for t in texts])


def test_a_call_gets_the_first_matching_profile_or_none():
    safety = Safety(SafetyPolicy.model_validate(POLICY))
    assert safety.for_call(_meta(daemon="working_memory"), "m").profile.stream == ("words", "pii")
    assert safety.for_call(_meta("acme", "k-checked"), "m").profile.input == ("dead",)
    assert safety.for_call(_meta("acme", "k-other"), "m").profile.input == ("words", "pii")
    assert safety.for_call(_meta("beta", "k-checked"), "m") is None  # no profile: not screened


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"profiles": {"p": {"input": ["nope"]}}}, "unknown guard `nope`"),
        ({"guards": {"h": {"kind": "http", "url": "http://x"}}, "profiles": {"p": {"stream": ["h"]}}}, "http guard"),
        ({"guards": {"b": {"kind": "blocklist"}}}, "needs terms"),
        ({"guards": {"b": {"kind": "blocklist", "regexes": ["("]}}}, "regexes.0"),
        ({"guards": {"p": {"kind": "pii", "entities": {"dna": "redact"}}}}, "unknown PII entity `dna`"),
        ({"select": [{"profile": "missing"}]}, "unknown profile"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_problem(bad, where):
    with pytest.raises(ValidationError, match=where):
        SafetyPolicy.model_validate(bad)


async def test_input_is_redacted_with_placeholders_stable_within_the_call():
    call = Safety(SafetyPolicy.model_validate(POLICY)).for_call(_meta("acme", "k1"), "gpt-4o-mini")
    out = await call.request(_chat("mail bob@example.com", "again: bob@example.com, or eve@example.com"))
    assert [m.content for m in out.messages] == ["mail <EMAIL_1>", "again: <EMAIL_1>, or <EMAIL_2>"]
    assert call.header() == "words=allow; pii=redacted:3"


async def test_a_blocked_input_names_the_guard_and_a_blocked_entity_refuses_too():
    safety = Safety(SafetyPolicy.model_validate(POLICY))
    with pytest.raises(GatewayError) as info:
        await safety.for_call(_meta("acme", "k1"), "m").request(_chat("tell me about Project  Nightingale"))
    assert info.value.kind is ErrorKind.CONTENT_FILTERED and "`words`" in info.value.message
    with pytest.raises(GatewayError, match="pii:card"):
        await safety.for_call(_meta("acme", "k1"), "m").request(_chat("my card is 4111 1111 1111 1111"))


async def test_tool_call_arguments_are_screened_in_an_answer():
    call = Safety(SafetyPolicy.model_validate(POLICY)).for_call(_meta("acme", "k1"), "m")
    answer = ChatResponse(id="r", text="done", tool_calls=[{"id": "c1", "name": "send", "arguments": json.dumps(
        {"to": "ann@example.com"})}], finish_reason="tool_calls", usage=Usage(), provider="p", model="m",
        upstream_model="m")  # fmt: skip
    out = await call.response(answer)
    assert json.loads(out.tool_calls[0].arguments) == {"to": "<EMAIL_1>"}
    blocked = await call.response(answer.model_copy(update={"text": "oh darn"}))
    assert blocked.finish_reason == "content_filter" and blocked.text == "" and blocked.tool_calls == ()


async def test_a_guard_that_cannot_answer_fails_closed_unless_the_policy_says_open():
    safety = Safety(SafetyPolicy.model_validate(POLICY))
    with pytest.raises(GatewayError) as info:
        await safety.for_call(_meta("acme", "k-checked"), "m").request(_chat("hello"))
    assert info.value.kind is ErrorKind.GUARD_UNAVAILABLE and info.value.status_code == 503
    lenient = safety.for_call(_meta("acme", "k-lenient"), "m")
    assert (await lenient.request(_chat("hello"))).messages[0].content == "hello"
    assert safety.failed_open["dead-open"] == 1 and lenient.header() == "dead-open=error"


class _Checker(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if any("slow" in t for t in body["texts"]):
            threading.Event().wait(1.0)
        texts = body["texts"]
        verdict = {"verdict": "redact", "texts": [t.upper() for t in texts]}
        if any("secret" in t for t in texts):
            verdict = {"verdict": "block", "category": "policy", "reason": "no secrets"}
        data = json.dumps(verdict).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def checker():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Checker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/check"
    server.shutdown()


async def test_an_external_guard_redacts_blocks_and_times_out(checker):
    ext = {"kind": "http", "url": checker, "timeout_ms": 300}
    policy = SafetyPolicy.model_validate(
        {"guards": {"ext": ext}, "profiles": {"p": {"input": ["ext"]}}, "select": [{"profile": "p"}]}
    )
    safety = Safety(policy)
    assert (await safety.for_call(_meta(), "m").request(_chat("quiet"))).messages[0].content == "QUIET"
    with pytest.raises(GatewayError, match="no secrets"):
        await safety.for_call(_meta(), "m").request(_chat("a secret"))
    with pytest.raises(GatewayError) as info:
        await safety.for_call(_meta(), "m").request(_chat("slow one"))
    assert info.value.kind is ErrorKind.GUARD_UNAVAILABLE and "300 ms" in info.value.message
    await safety.aclose()


async def _streamed(call, chunks: list[str], tools: list[ToolCallDelta] = ()) -> list:
    async def events():
        yield StartEvent(id="s", provider="p", model="m", upstream_model="m")
        for chunk in chunks:
            yield TextDelta(text=chunk)
        for tool in tools:
            yield tool
        yield FinishEvent(finish_reason="stop", usage=Usage(output_tokens=9))

    return [e async for e in call.stream(events())]


def _text(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize("cut", range(1, 40))
async def test_a_phrase_split_at_any_chunk_boundary_never_reaches_the_client(cut):
    call = Safety(SafetyPolicy.model_validate(POLICY)).for_call(_meta("acme", "k1"), "m")
    text = "Here it is: the project nightingale plan, in full."
    events = await _streamed(call, [text[:cut], text[cut:]])
    assert "nightingale" not in _text(events).lower() and "project n" not in _text(events).lower()
    assert events[-1].type == "error" and events[-1].error.kind is ErrorKind.CONTENT_FILTERED


@pytest.mark.parametrize("size", [1, 3, 7, 64])
async def test_an_email_split_across_chunks_is_redacted_and_text_flows_behind_the_window(size):
    call = Safety(SafetyPolicy.model_validate(POLICY)).for_call(_meta("acme", "k1"), "m")
    body = "word " * 40 + "write to carol.smith@example.com today. " + "more " * 30
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    events = await _streamed(call, chunks)
    assert _text(events) == body.replace("carol.smith@example.com", "<EMAIL_1>")
    first = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert sum(len(c) for c in chunks[:first]) <= 64 + 2 * size + 5  # the first text went out once the window filled
    assert events[-1].type == "finish" and events[-1].safety == "words=allow; pii=redacted:1"


async def test_streamed_tool_calls_are_released_whole_once_checked():
    call = Safety(SafetyPolicy.model_validate(POLICY)).for_call(_meta("acme", "k1"), "m")
    pieces = [ToolCallDelta(index=0, id="c1", name="send", arguments='{"to": "dan@exa'),
              ToolCallDelta(index=0, arguments='mple.com"}')]  # fmt: skip
    events = await _streamed(call, ["ok"], pieces)
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert len(calls) == 1 and json.loads(calls[0].arguments) == {"to": "<EMAIL_1>"} and calls[0].name == "send"


async def test_a_guard_that_raises_fails_closed(monkeypatch):
    safety = Safety(SafetyPolicy.model_validate(POLICY))

    def broken(self, text):
        raise RuntimeError("detector bug")

    monkeypatch.setattr(type(safety.guards["pii"]), "finding", broken)
    with pytest.raises(GatewayError) as info:
        await safety.for_call(_meta("acme", "k1"), "m").request(_chat("hello"))
    assert info.value.kind is ErrorKind.GUARD_UNAVAILABLE and "RuntimeError" in info.value.message
