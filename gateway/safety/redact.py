"""Redaction: findings replaced by typed placeholders (`<EMAIL_1>`), the same value by the same placeholder
throughout one request (so a conversation still reads consistently), counted per entity type."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from gateway.safety.pii import Span


class Redactor:
    """One per request: the placeholder of each value seen so far."""

    def __init__(self) -> None:
        self._names: dict[tuple[str, str], str] = {}
        self._per_type: Counter[str] = Counter()
        self.redacted: Counter[str] = Counter()  # entity type -> findings replaced

    def placeholder(self, entity: str, value: str) -> str:
        key = (entity, value)
        if key not in self._names:
            self._per_type[entity] += 1
            self._names[key] = f"<{entity.upper()}_{self._per_type[entity]}>"
        return self._names[key]

    def apply(self, text: str, spans: Sequence[Span]) -> str:
        """`text` with every span (sorted, not overlapping) replaced."""
        if not spans:
            return text
        out, at = [], 0
        for span in spans:
            out.append(text[at : span.start])
            out.append(self.placeholder(span.entity, text[span.start : span.end]))
            self.redacted[span.entity] += 1
            at = span.end
        out.append(text[at:])
        return "".join(out)
