"""The JSON Schema → Gemini `parameters` sanitizer."""

from gateway.providers.gemini_contents import call_id, signature_of
from gateway.providers.gemini_schema import sanitize_schema


def test_unsupported_keywords_are_rewritten_or_dropped():
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
        "properties": {
            "n": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
            "tag": {"const": "x"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "maybe": {"type": ["integer", "null"]},
            "when": {"$ref": "#/$defs/slot"},
        },
        "$defs": {"slot": {"type": "string", "format": "date-time", "title": "Slot"}},
    }  # fmt: skip
    assert sanitize_schema(schema) == {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0, "maximum": 10},
            "tag": {"enum": ["x"]},
            "note": {"nullable": True, "type": "string"},
            "maybe": {"nullable": True, "type": "integer"},
            "when": {"type": "string", "format": "date-time"},
        },
    }


def test_thought_signatures_ride_in_tool_call_ids():
    signature = b"\x00\xffsig-bytes"
    assert signature_of(call_id(2, signature)) == signature
    assert signature_of(call_id(0, None)) is None
    assert signature_of("call_abc") is None  # ids from other providers carry none
