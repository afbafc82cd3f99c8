"""The audit trail of authentication and authorization: one structured event per decision (never a secret)."""

from __future__ import annotations

import json
import logging

from gateway.schema import GatewayError
from gateway.schema.principal import Principal


class Audit:
    """`auth_decision` JSON events in the `gateway.audit` log (the replica's log file); an allowed principal's
    event body is built once per (principal, route) and reused."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("gateway.audit")
        self._allowed: dict[tuple[str, str], tuple[Principal, str]] = {}

    def allow(self, route: str, principal: Principal) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        slot = (principal.key_id, route)
        cached = self._allowed.get(slot)
        if cached is None or cached[0] is not principal:  # a new revision of the key makes a new principal
            if len(self._allowed) > 10_000:
                self._allowed.clear()
            cached = self._allowed[slot] = (principal, _event("allow", route, principal, None, None))
        self._log.info(cached[1])

    def deny(self, route: str, error: GatewayError, principal: Principal | None = None, key_id: str | None = None,
             daemon: str | None = None, model: str | None = None) -> None:  # fmt: skip
        extra = {"daemon": daemon, "model": model} if daemon or model else None
        self._log.info(_event("deny", route, principal, error, extra, key_id))


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
