"""Screening one call: its profile's guards run on the request (input, embeddings_input), on a complete answer
(output) and on the stream as it is produced, with one redactor for the whole call; every verdict is kept for
the `x-gateway-safety` header and the log. A guard that fails refuses the call unless it is `fail_open`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from gateway.safety.guards import Guard, GuardFailed, Verdict
from gateway.safety.policy import SafetyPolicy, Stage
from gateway.safety.redact import Redactor
from gateway.safety.stream import StreamScreen
from gateway.schema import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    ErrorEvent,
    ErrorKind,
    FinishEvent,
    GatewayError,
    StartEvent,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    UsageEvent,
)
from gateway.schema.chat import GatewayMetadata, Message, TextPart, ToolCall

log = logging.getLogger("gateway.safety")
PROFILES_CACHE = 4096
RANK = ("allow", "flag", "redact", "error", "block")  # which outcome a guard's header entry shows (the strongest)
WORDS = {"allow": "allow", "flag": "flagged", "redact": "redacted", "error": "error", "block": "blocked"}


def blocked(verdict: Verdict) -> GatewayError:
    return GatewayError(ErrorKind.CONTENT_FILTERED, f"blocked by guard `{verdict.guard}` at {verdict.stage} "
                        f"({verdict.category}: {verdict.reason})", retryable=False)  # fmt: skip


class Safety:
    """One per replica: the compiled guards, which profile each caller gets (cached), and fail-open counts."""

    def __init__(self, policy: SafetyPolicy) -> None:
        self.policy = policy
        self.guards = {name: Guard.build(name, spec) for name, spec in policy.guards.items()}
        self.failed_open: Counter[str] = Counter()
        self._profiles: dict[tuple[object, ...], str | None] = {}

    def for_call(self, meta: GatewayMetadata, model: str) -> CallSafety | None:
        """The call's screening, or None when its profile has no guards at all (nothing to do)."""
        principal = meta.principal
        key = (meta.org, principal.key_id if principal else None, meta.daemon, model)
        if key not in self._profiles:
            if len(self._profiles) >= PROFILES_CACHE:
                self._profiles.clear()
            self._profiles[key] = self.policy.profile_for(meta, model)
        name = self._profiles[key]
        return CallSafety(self, name) if name is not None else None

    async def aclose(self) -> None:
        for guard in self.guards.values():
            await guard.aclose()


class CallSafety:
    def __init__(self, safety: Safety, profile: str) -> None:
        self._safety, self.profile = safety, safety.policy.profiles[profile]
        self.redactor = Redactor()
        self.verdicts: list[Verdict] = []
        self._stream: StreamScreen | None = None  # one for the whole call: a continuation leg goes on from it

    def guards(self, stage: Stage) -> list[Guard]:
        return [self._safety.guards[name] for name in self.profile.at(stage)]

    async def texts(self, texts: Sequence[str], stage: Stage) -> list[str]:
        """`texts` through the stage's guards in order: redacted, or a 400 (blocked), or a 503 (a guard failed)."""
        out = list(texts)
        for guard in self.guards(stage):
            started = time.perf_counter()
            try:
                out, verdict = await _timed(guard, out, stage, self.redactor)
            except GuardFailed as exc:
                verdict = self._failed(guard, stage, str(exc))
            verdict = replace(verdict, ms=(time.perf_counter() - started) * 1000)
            self.verdicts.append(verdict)
            if verdict.outcome == "block":
                log.info("safety: %s blocked at %s (%s)", guard.name, stage, verdict.category)
                raise blocked(verdict)
            log.debug("safety: %s at %s: %s in %.2f ms", guard.name, stage, verdict.outcome, verdict.ms)
        return out

    def _failed(self, guard: Guard, stage: Stage, why: str) -> Verdict:
        if guard.spec.on_error == "fail_open":
            self._safety.failed_open[guard.name] += 1
            log.warning("safety: guard %s failed at %s (%s); fail_open lets the text through", guard.name, stage, why)
            return Verdict(guard.name, stage, "error", "unavailable", why)
        log.warning("safety: guard %s failed at %s (%s); the call is refused (fail_closed)", guard.name, stage, why)
        raise GatewayError(ErrorKind.GUARD_UNAVAILABLE, f"guard `{guard.name}` could not check the {stage} ({why}); "
                           "nothing was forwarded", code="guard_unavailable")  # fmt: skip

    # --- the stages -----------------------------------------------------------------------------------------
    async def request(self, request: ChatRequest) -> ChatRequest:
        """The input stage: every message text, tool result and tool-call argument the provider would see."""
        if not self.profile.input:
            return request
        before = _message_texts(request.messages)
        texts = await self.texts(before, "input")
        if texts == before:
            return request
        return request.model_copy(update={"messages": _rebuilt(request.messages, texts)})

    async def embeddings(self, request: EmbeddingsRequest) -> EmbeddingsRequest:
        if not self.profile.embeddings_input:
            return request
        texts = await self.texts(request.texts, "embeddings_input")
        return request if list(request.texts) == texts else request.model_copy(update={"texts": tuple(texts)})

    async def response(self, response: ChatResponse) -> ChatResponse:
        """The output stage on a complete answer, tool-call arguments included. Blocked: the answer is withheld
        and it finishes with `content_filter` (what it cost is still booked)."""
        if not self.profile.output:
            return response
        texts = [response.text or "", *(c.arguments for c in response.tool_calls)]
        try:
            out = await self.texts(texts, "output")
        except GatewayError as exc:
            if exc.kind is not ErrorKind.CONTENT_FILTERED:
                raise
            return response.model_copy(update={"text": "", "tool_calls": (), "finish_reason": "content_filter"})
        calls = tuple(c.model_copy(update={"arguments": a}) for c, a in zip(response.tool_calls, out[1:], strict=True))
        return response.model_copy(update={"text": out[0] if response.text is not None else None, "tool_calls": calls})

    def stream(self, events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
        guards = self.guards("stream")
        if guards and self._stream is None:
            self._stream = StreamScreen(guards, self.redactor, self.verdicts)
        return _screened(events, self._stream, self)

    def header(self) -> str | None:
        """`x-gateway-safety`: each guard's strongest outcome and its count: `pii=redacted:2; blocklist=allow`."""
        best: dict[str, tuple[int, int]] = {}  # guard -> (rank of its strongest outcome, findings of that outcome)
        for v in self.verdicts:
            rank, (old, count) = RANK.index(v.outcome), best.get(v.guard, (-1, 0))
            best[v.guard] = (rank, v.count) if rank > old else (rank, count + v.count) if rank == old else (old, count)
        return "; ".join(f"{g}={WORDS[RANK[r]]}" + (f":{n}" if n else "") for g, (r, n) in best.items()) or None


async def _timed(guard: Guard, texts: list[str], stage: Stage, redactor: Redactor) -> tuple[list[str], Verdict]:
    """The guard's answer within its timeout; a timeout or any error of the guard's own is GuardFailed."""
    try:
        return await asyncio.wait_for(guard.check(texts, stage, redactor), guard.spec.timeout_ms / 1000)
    except TimeoutError:
        raise GuardFailed(f"no verdict within {guard.spec.timeout_ms} ms") from None
    except GuardFailed:
        raise
    except Exception as exc:  # a bug or a library error in a guard must not let the text through either
        log.exception("safety: guard %s raised", guard.name)
        raise GuardFailed(type(exc).__name__) from None


async def _screened(events: AsyncIterator[StreamEvent], screen: StreamScreen | None,
                    call: CallSafety) -> AsyncIterator[StreamEvent]:  # fmt: skip
    """The stream with its text held back by the window and released screened; tool calls released whole, once
    checked; a block ends it with a content_filter error event (never the blocked text). Start and finish carry
    the verdicts so far."""
    usage = None
    try:
        async for event in events:
            if screen is not None and isinstance(event, TextDelta):
                text = screen.feed(event.text)
                if text:
                    yield TextDelta(text=text)
            elif screen is not None and isinstance(event, ToolCallDelta):
                screen.hold_tool(event)
            elif isinstance(event, StartEvent | FinishEvent):
                for out in screen.end() if screen is not None and isinstance(event, FinishEvent) else ():
                    yield out
                yield event.model_copy(update={"safety": call.header()})
            else:
                if isinstance(event, UsageEvent):
                    usage = event.usage
                if screen is not None and isinstance(event, ErrorEvent):
                    for out in screen.end_text_only():
                        yield out
                yield event
    except GatewayError as exc:
        if exc.kind is not ErrorKind.CONTENT_FILTERED:
            raise
        yield ErrorEvent(error=exc.to_info(), usage=usage)


def _message_texts(messages: Sequence[Message]) -> list[str]:
    """Every text of every message in order (content, text parts, tool-call arguments), as `_rebuilt` reads them."""
    out: list[str] = []
    for m in messages:
        if isinstance(m.content, str):
            out.append(m.content)
        elif m.content is not None:
            out.extend(p.text for p in m.content if isinstance(p, TextPart))
        out.extend(c.arguments for c in m.tool_calls)
    return out


def _rebuilt(messages: Sequence[Message], texts: list[str]) -> tuple[Message, ...]:
    it = iter(texts)
    out = []
    for m in messages:
        update: dict[str, Any] = {}
        if isinstance(m.content, str):
            update["content"] = next(it)
        elif m.content is not None:
            update["content"] = [p.model_copy(update={"text": next(it)}) if isinstance(p, TextPart) else p
                                 for p in m.content]  # fmt: skip
        if m.tool_calls:
            update["tool_calls"] = tuple(ToolCall(id=c.id, name=c.name, arguments=next(it)) for c in m.tool_calls)
        out.append(m.model_copy(update=update))
    return tuple(out)
