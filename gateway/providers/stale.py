"""Sending a request once more when it met a pooled keep-alive socket that the upstream had closed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

T = TypeVar("T")
STALE_RESENDS = 1  # a pooled keep-alive socket the upstream closed (it restarted): resent once, on a fresh socket
Send = Callable[[bool], Awaitable[T]]  # send(fresh): fresh = on a new connection, not a pooled one


def stale_socket(exc: BaseException) -> bool:
    """The connection error came from a pooled socket the server had closed before answering anything: it
    disconnected, or the socket was already closing when the request was to be written (nothing went out)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, aiohttp.ServerDisconnectedError):
            return True
        if isinstance(seen, aiohttp.ClientConnectionResetError) and "closing transport" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class StaleResend:
    """A request that met a closed socket (no byte of an answer came back) while the upstream model was last seen
    answering is sent again once: most likely a pooled keep-alive socket the upstream closed on a restart. After a
    resend fails too, none is made for that model until it answers again, so an upstream that resets every
    connection costs one extra call per outage, not per request."""

    def __init__(self) -> None:
        self._silent: set[str] = set()  # upstream models whose last call failed after a resend (no resend now)

    async def send(self, send: Send[T], model: str) -> T:
        """`send(False)`, and on a stale socket `send(True)`: the resend goes on a new connection, since the other
        pooled sockets to an upstream that restarted are as dead as the first."""
        for resend in range(STALE_RESENDS + 1):
            try:
                answer = await send(resend > 0)
            except Exception as exc:
                if resend:  # the resend failed too (however): the upstream is not answering
                    self._silent.add(model)
                if not stale_socket(exc) or resend == STALE_RESENDS or model in self._silent:
                    raise
                continue
            self._silent.discard(model)
            return answer
        raise AssertionError("unreachable")
