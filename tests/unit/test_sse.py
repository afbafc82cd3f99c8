"""The SSE decoder the adapters read provider streams with."""

from gateway.providers.sse import SSEvent, sse_events


async def _lines(*lines: str):
    for line in lines:
        yield line


async def _decode(*lines: str) -> list[SSEvent]:
    return [e async for e in sse_events(_lines(*lines))]


async def test_data_only_events_and_comments():
    events = await _decode(": keep-alive", "", 'data: {"a":1}', "", "data: [DONE]", "")
    assert events == [SSEvent(None, '{"a":1}'), SSEvent(None, "[DONE]")]


async def test_named_events_and_multi_line_data():
    events = await _decode("event: response.created", "data: {", 'data: "x": 1}', "", "event: ping", "data:", "")
    assert events == [SSEvent("response.created", '{\n"x": 1}')]  # an event with empty data is not dispatched


async def test_pending_event_at_end_of_body_is_dispatched():
    assert await _decode("data: tail") == [SSEvent(None, "tail")]
