"""The stream guard: text held back by a window (the longest blocklist entry or PII pattern, in the characters
matching sees) so an entry split across chunks is caught before any of it reaches the client; the rest is
released at once, redacted. Tool-call arguments are held whole until the stream ends, then checked."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from gateway.safety.guards import Guard, Outcome, Verdict
from gateway.safety.normalize import visible_tail
from gateway.safety.pii import Span
from gateway.safety.redact import Redactor
from gateway.schema import ErrorKind, GatewayError, TextDelta, ToolCallDelta
from gateway.schema.events import StreamEvent

WORD_CAP = 1024  # a "word" longer than this (no whitespace: base64, minified code) is released anyway


class StreamScreen:
    def __init__(self, guards: Sequence[Guard], redactor: Redactor, verdicts: list[Verdict]) -> None:
        self._guards, self._redactor, self._verdicts = list(guards), redactor, verdicts
        self.window = max(g.window for g in self._guards)
        self._held = ""  # text not yet released
        self._tools: dict[int, list[ToolCallDelta]] = {}
        self._redacted: Counter[str] = Counter()  # guard -> findings released redacted
        self._flagged: Counter[str] = Counter()

    def feed(self, text: str) -> str:
        """Take a chunk; answer the text that may go out now (raises content_filtered on a block)."""
        self._held += text
        return self._release(final=False)

    def end_text_only(self) -> list[StreamEvent]:
        text = self._release(final=True)
        return [TextDelta(text=text)] if text else []

    def end(self) -> list[StreamEvent]:
        """The stream finished: the held text, then each tool call whole (its arguments checked), then the verdicts."""
        out = self.end_text_only()
        for index, pieces in sorted(self._tools.items()):
            args = self._screened("".join(p.arguments for p in pieces), final=True)[0]
            first = pieces[0]
            out.append(ToolCallDelta(index=index, id=first.id, name=first.name, arguments=args))
        for g in self._guards:
            redacted, flagged = self._redacted[g.name], self._flagged[g.name]
            outcome: Outcome = "redact" if redacted else "flag" if flagged else "allow"
            self._verdicts.append(Verdict(g.name, "stream", outcome, count=redacted or flagged))
        return out

    def hold_tool(self, event: ToolCallDelta) -> None:
        self._tools.setdefault(event.index, []).append(event)

    def _release(self, final: bool) -> str:
        released, self._held = self._screened(self._held, final)
        return released

    def _screened(self, text: str, final: bool) -> tuple[str, str]:
        """(what may go out, redacted; what stays held) of `text`. A block raises."""
        spans: list[tuple[Span, str]] = []
        for guard in self._guards:
            finding = guard.finding(text)
            if finding.block is not None:
                verdict = Verdict(guard.name, "stream", "block", *finding.block)
                self._verdicts.append(verdict)
                raise GatewayError(ErrorKind.CONTENT_FILTERED, f"blocked by guard `{guard.name}` in the stream "
                                   f"({finding.block[0]}: {finding.block[1]})", retryable=False)  # fmt: skip
            spans.extend((span, guard.name) for span in finding.redact)
            self._flagged[guard.name] = max(self._flagged[guard.name], finding.flagged)  # held text is seen again
        cut = len(text) if final else self._cut(text, [s for s, _ in spans])
        out = _disjoint(sorted(((s, g) for s, g in spans if s.end <= cut), key=lambda sg: sg[0].start))
        self._redacted.update(g for _, g in out)
        return self._redactor.apply(text[:cut], [s for s, _ in out]), text[cut:]

    def _cut(self, text: str, spans: list[Span]) -> int:
        """Where the held text splits: before the window, never inside a word or a finding."""
        cut = visible_tail(text, self.window)
        for span in spans:
            if span.start < cut < span.end:
                cut = span.start
        word = cut
        while word > 0 and not text[word - 1].isspace():
            word -= 1
        return word if cut - word <= WORD_CAP else cut


def _disjoint(spans: list[tuple[Span, str]]) -> list[tuple[Span, str]]:
    """Two guards finding overlapping spans: the first one (by start) is redacted."""
    kept: list[tuple[Span, str]] = []
    for span, guard in spans:
        if not kept or span.start >= kept[-1][0].end:
            kept.append((span, guard))
    return kept
