"""`POST /v1/gateway/redact`: PII found and replaced in texts the caller sends (the Working Memory service's own
writes), with the same detectors and placeholders the guards use; nothing is sent anywhere."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from gateway.http_json import json_response, read_json
from gateway.safety.pii import ENTITIES, Span, find
from gateway.safety.redact import Redactor
from gateway.schema import validation_error
from gateway.schema.principal import Principal

Authorize = Callable[[Request, str], Awaitable[Principal]]
MAX_TEXTS, MAX_CHARS = 2048, 1_000_000  # one request's texts, and their characters in all


class RedactApi:
    def __init__(self, authorize: Authorize) -> None:
        self._authorize = authorize

    async def redact(self, http: Request) -> Response:
        """Body `{"texts": [...], "entities": [...]}` (entities: default every type). Answers the redacted texts
        and, per text, each finding's span in the original, type and placeholder (stable across the texts)."""
        await self._authorize(http, "redact")
        texts, entities = _read(await read_json(http))
        redactor = Redactor()
        out, findings = [], []
        for text in texts:
            spans = find(text, entities)
            out.append(redactor.apply(text, spans))
            findings.append([_finding(s, redactor.placeholder(s.entity, text[s.start : s.end])) for s in spans])
        return json_response({"texts": out, "findings": findings, "redacted": dict(redactor.redacted)})


def _finding(span: Span, placeholder: str) -> dict[str, Any]:
    return {"start": span.start, "end": span.end, "entity": span.entity, "placeholder": placeholder}


def _read(body: Any) -> tuple[list[str], frozenset[str]]:
    if not isinstance(body, dict):
        raise validation_error("body", "the request body must be a JSON object with `texts`")
    unknown = sorted(set(body) - {"texts", "entities"})
    if unknown:
        raise validation_error(unknown[0], "unsupported field (the body takes `texts` and `entities`)")
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise validation_error("texts", "a non-empty list of strings")
    if len(texts) > MAX_TEXTS or sum(map(len, texts)) > MAX_CHARS:
        raise validation_error("texts", f"at most {MAX_TEXTS} texts and {MAX_CHARS} characters in all")
    entities = body.get("entities", list(ENTITIES))
    if not isinstance(entities, list) or not all(isinstance(e, str) for e in entities):
        raise validation_error("entities", f"a list of entity types ({', '.join(ENTITIES)})")
    for i, entity in enumerate(entities):
        if entity not in ENTITIES:
            raise validation_error(f"entities.{i}", f"unknown entity type `{entity}` (known: {', '.join(ENTITIES)})")
    return texts, frozenset(entities)
