"""The audit trail of authentication and authorization: one structured event per decision (never a secret)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from gateway.schema import GatewayError
from gateway.schema.principal import Principal

MAX_PENDING = 10_000  # buffered allow events written at once beyond this (a burst between two flushes)


class Audit:
    """`auth_decision` JSON events in the `gateway.audit` log (the replica's log file), each with its time `ts`.

    An allowed principal's event body is built once per (principal, route) and reused. With `buffered`, allow
    events (one per authenticated request) are kept in memory and written together by `flush()` — every
    `run(every_s)` tick — so a request pays for an append, not a log record and a file write; a deny is written at
    once (after what is pending, so the order holds)."""

    def __init__(self, logger: logging.Logger | None = None, buffered: bool = False) -> None:
        self._log = logger or logging.getLogger("gateway.audit")
        self._allowed: dict[tuple[str, str], tuple[Principal, str]] = {}
        self._buffered = buffered
        self._pending: list[str] = []

    def allow(self, route: str, principal: Principal) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        slot = (principal.key_id, route)
        cached = self._allowed.get(slot)
        if cached is None or cached[0] is not principal:  # a new revision of the key makes a new principal
            if len(self._allowed) > 10_000:
                self._allowed.clear()
            cached = self._allowed[slot] = (principal, _event("allow", route, principal, None, None)[1:])
        line = f'{{"ts":{time.time():.3f},{cached[1]}'
        if not self._buffered:
            self._log.info(line)
            return
        self._pending.append(line)
        if len(self._pending) >= MAX_PENDING:
            self.flush()

    def deny(self, route: str, error: GatewayError, principal: Principal | None = None, key_id: str | None = None,
             daemon: str | None = None, model: str | None = None) -> None:  # fmt: skip
        extra = {"daemon": daemon, "model": model} if daemon or model else None
        self.flush()
        body = _event("deny", route, principal, error, extra, key_id)[1:]
        self._log.info(f'{{"ts":{time.time():.3f},{body}')

    def flush(self) -> None:
        """Write the pending allow events (one log record, one JSON event per line)."""
        if self._pending:
            lines, self._pending = self._pending, []
            self._log.info("\n".join(lines))

    async def run(self, every_s: float = 0.5) -> None:
        """Flush every `every_s` until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(every_s)
                self.flush()
        finally:
            self.flush()


def _event(decision: str, route: str, principal: Principal | None, error: GatewayError | None,
           extra: dict[str, str | None] | None, key_id: str | None = None) -> str:  # fmt: skip
    body: dict[str, object] = {"event": "auth_decision", "decision": decision, "route": route,
                               "key_id": principal.key_id if principal else key_id,
                               "via": principal.via if principal else None,
                               "org": principal.org if principal else None,
                               "user": principal.user if principal else None}  # fmt: skip
    if error is not None:
        body.update(status=error.status_code, code=error.code, reason=error.message)
    if extra:
        body.update(extra)
    return json.dumps(body, separators=(",", ":"))
