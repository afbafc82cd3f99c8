"""The normalized schema: validation that names fields, error semantics that survive pickling."""

import pickle

import pytest
from pydantic import ValidationError

from gateway.schema import (
    STREAM_EVENT_ADAPTER,
    ChatRequest,
    ErrorEvent,
    ErrorKind,
    FinishEvent,
    GatewayError,
    ImagePart,
    Message,
    Usage,
)


def _req(**kw):
    return ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], **kw)


def test_tool_message_requires_tool_call_id():
    with pytest.raises(ValidationError, match="tool_call_id"):
        Message(role="tool", content="sunny")


def test_only_assistant_carries_tool_calls():
    with pytest.raises(ValidationError, match="tool_calls"):
        Message(role="user", content="x", tool_calls=[{"id": "c", "name": "f"}])


def test_image_needs_exactly_one_source_and_media_type_for_data():
    with pytest.raises(ValidationError):
        ImagePart(url="http://x/y.png", data="AAAA", media_type="image/png")
    with pytest.raises(ValidationError, match="media_type"):
        ImagePart(data="AAAA")
    assert ImagePart(data="AAAA", media_type="image/png").data == "AAAA"


def test_tool_choice_must_name_a_declared_tool():
    tools = [{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    with pytest.raises(ValidationError, match="not among the tools"):
        _req(tools=tools, tool_choice={"name": "other"})
    assert _req(tools=tools, tool_choice={"name": "get_weather"}).tool_choice.name == "get_weather"


def test_sampling_ranges_are_enforced():
    with pytest.raises(ValidationError, match="temperature"):
        _req(temperature=3)
    with pytest.raises(ValidationError, match="max_tokens"):
        _req(max_tokens=0)
    with pytest.raises(ValidationError, match="stop"):
        _req(stop=["a", "b", "c", "d", "e"])


def test_metadata_daemon_and_task_class_are_closed_sets():
    with pytest.raises(ValidationError, match="daemon"):
        _req(metadata={"daemon": "scheduler"})
    r = _req(metadata={"daemon": "executor", "task_class": "code", "turn_id": "t1"})
    assert (r.metadata.daemon, r.metadata.task_class) == ("executor", "code")


def test_unknown_fields_are_rejected():
    with pytest.raises(ValidationError, match="frequency"):
        _req(frequency=1)


@pytest.mark.parametrize(
    ("kind", "retryable", "fallbackable", "status"),
    [
        (ErrorKind.RATE_LIMITED, True, True, 429),
        (ErrorKind.SERVER, True, True, 502),
        (ErrorKind.CONTEXT_LENGTH, False, True, 400),
        (ErrorKind.CONTENT_FILTERED, False, False, 400),
        (ErrorKind.BAD_REQUEST, False, False, 400),
        (ErrorKind.TRUNCATED_STREAM, True, True, 502),
    ],
)
def test_error_kinds_carry_retry_and_fallback_semantics(kind, retryable, fallbackable, status):
    err = GatewayError(kind, "x")
    assert (err.retryable, err.fallbackable, err.status_code) == (retryable, fallbackable, status)


def test_errors_pickle_with_all_their_fields():
    err = GatewayError(
        ErrorKind.RATE_LIMITED,
        "slow down",
        provider="openai",
        model="gpt-4o-mini",
        retry_after=2.5,
        provider_code="rate_limit_exceeded",
        usage=Usage(input_tokens=7),
    )
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, GatewayError)
    assert (back.kind, back.message, back.provider, back.retry_after, back.provider_code) == (
        ErrorKind.RATE_LIMITED,
        "slow down",
        "openai",
        2.5,
        "rate_limit_exceeded",
    )
    assert back.usage == Usage(input_tokens=7)
    assert back.retryable and back.fallbackable


def test_stream_events_are_a_discriminated_union():
    finish = STREAM_EVENT_ADAPTER.validate_python(
        {"type": "finish", "finish_reason": "stop", "usage": {"input_tokens": 3, "output_tokens": 2}}
    )
    assert isinstance(finish, FinishEvent) and finish.usage.total_tokens == 5
    err = STREAM_EVENT_ADAPTER.validate_json(
        ErrorEvent(error=GatewayError("server", "boom").to_info()).model_dump_json()
    )
    assert isinstance(err, ErrorEvent) and err.error.kind is ErrorKind.SERVER
    with pytest.raises(ValidationError):
        STREAM_EVENT_ADAPTER.validate_python({"type": "finish", "finish_reason": "done", "usage": {}})


def test_usage_adds_up():
    total = Usage(input_tokens=10, output_tokens=5, cached_input_tokens=4) + Usage(input_tokens=1, reasoning_tokens=2)
    assert (total.input_tokens, total.output_tokens, total.cached_input_tokens, total.reasoning_tokens) == (11, 5, 4, 2)
