"""The lean transport: one aiohttp session per adapter posts the JSON and reads the JSON or the SSE lines itself.

It sends what the official SDK sends — the same method, URL, body, auth, version and configured headers, which
are read off an SDK client built from the same config (so an SDK upgrade that changes `anthropic-version` changes
them here too) — without the SDK's per-request option building, header merging and URL parsing, which took ~27 %
of a replica's samples under load (BENCHMARKS.md). Upstream error statuses are raised as `UpstreamStatus`, which
the providers' SDK error mappers classify like the SDK's own status errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from gateway.config import ProviderConfig
from gateway.json_codec import dumps, loads
from gateway.providers.base import Target
from gateway.providers.sdk_errors import UpstreamStatus
from gateway.providers.sse import SSEvent, sse_events
from gateway.providers.stale import StaleResend
from gateway.schema import ErrorKind, GatewayError

USER_AGENT = "llm-gateway/0.1"


def sdk_headers(client: Any) -> dict[str, str]:
    """The headers an SDK client puts on every request (auth, version, configured ones), minus its telemetry."""
    merged = {**client.auth_headers, **client.default_headers}
    headers = {k: v for k, v in merged.items() if isinstance(v, str) and not k.lower().startswith("x-stainless")}
    headers["User-Agent"] = USER_AGENT
    return headers


class OpenStream:
    """An open SSE response and its silence watchdog: one timer per stream, re-armed from the last chunk's time
    when it fires, so a chunk costs a clock read (aiohttp's `sock_read` re-arms a timer on every chunk)."""

    def __init__(self, response: aiohttp.ClientResponse, silence_s: float) -> None:
        self.response, self.expired = response, False
        self._loop = asyncio.get_running_loop()
        self._silence = silence_s
        self.last = self._loop.time()
        self._timer = self._loop.call_at(self.last + silence_s, self._check)

    def _check(self) -> None:
        quiet_until = self.last + self._silence
        if self._loop.time() < quiet_until:
            self._timer = self._loop.call_at(quiet_until, self._check)
            return
        self.expired = True
        self.response.close()  # the pending read ends; `lines` turns that into a timeout

    async def lines(self) -> AsyncIterator[str]:
        """The body's lines without their line ends, read in the chunks the socket delivers."""
        pending, clock = b"", self._loop.time
        try:
            async for chunk in self.response.content.iter_any():
                self.last = clock()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.rstrip(b"\r").decode()
        except aiohttp.ClientError:
            if not self.expired:
                raise
        finally:
            self._timer.cancel()
        if self.expired:
            raise TimeoutError(f"the upstream sent nothing for {self._silence:g} s")
        if pending:
            yield pending.rstrip(b"\r").decode()

    def close(self) -> None:
        """Back to the pool when the body was read to its end, else the socket is closed (an abandoned stream)."""
        self._timer.cancel()
        if self.response.content.at_eof():
            self.response.release()
        else:
            self.response.close()


class FastHttp:
    """One provider's HTTP on its own aiohttp session: JSON in, JSON or an open SSE response out, errors mapped."""

    def __init__(self, config: ProviderConfig, base_url: str, headers: dict[str, str], provider: str,
                 map_error: Any) -> None:  # fmt: skip
        self.provider, self.map_error = provider, map_error
        self._base, self._headers = base_url.rstrip("/"), headers
        t = config.timeouts
        self._json_timeout = aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect, sock_read=t.read)
        self._stream_timeout = aiohttp.ClientTimeout(sock_connect=t.connect)  # silence: OpenStream's watchdog
        self._read = t.read
        self._limit = config.max_connections
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None
        self._resend = StaleResend()

    def error(self, exc: BaseException, target: Target, **kw: Any) -> GatewayError:
        return self.map_error(exc, provider=self.provider, model=target.name, **kw)  # type: ignore[no-any-return]

    def _client(self, fresh: bool = False) -> aiohttp.ClientSession:
        """The pooled session, or (`fresh`) one whose every request opens a new connection: for a resend after a
        stale pooled socket. Both are made on first use, inside the replica's running loop."""
        if fresh:
            if self._fresh is None:
                connector = aiohttp.TCPConnector(limit=0, force_close=True)
                self._fresh = aiohttp.ClientSession(connector=connector, headers=self._headers)
            return self._fresh
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self._session

    async def _post(self, path: str, body: dict[str, Any], model: str, *,
                    stream: bool) -> aiohttp.ClientResponse:  # fmt: skip
        data, limits = dumps(body), self._stream_timeout if stream else self._json_timeout

        async def send(fresh: bool) -> aiohttp.ClientResponse:
            return await self._client(fresh).post(self._base + path, data=data, timeout=limits)

        response = await self._resend.send(send, model)
        if response.status >= 400:
            raise await _status_error(response)
        return response

    async def post_json(self, path: str, body: dict[str, Any], target: Target) -> dict[str, Any]:
        try:
            response = await self._post(path, body, target.upstream, stream=False)
            async with response:
                data = loads(await response.read())
        except Exception as exc:
            raise self.error(exc, target) from None
        if not isinstance(data, dict):
            raise GatewayError(ErrorKind.INVALID_RESPONSE, f"{self.provider}: {path} returned a non-object body",
                               provider=self.provider, model=target.name)  # fmt: skip
        return data

    async def open_stream(self, path: str, body: dict[str, Any], target: Target) -> OpenStream:
        """The answer's headers within `read` seconds, then the body under the silence watchdog."""
        try:
            async with asyncio.timeout(self._read):
                response = await self._post(path, body, target.upstream, stream=True)
        except Exception as exc:
            raise self.error(exc, target) from None
        return OpenStream(response, self._read)

    @staticmethod
    def events(stream: OpenStream) -> AsyncIterator[SSEvent]:
        return sse_events(stream.lines())

    @staticmethod
    async def close_stream(stream: OpenStream) -> None:
        stream.close()

    async def aclose(self) -> None:
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()


async def _status_error(response: aiohttp.ClientResponse) -> UpstreamStatus:
    """The upstream's error answer, read and released; its body parsed when it is JSON."""
    async with response:
        raw = await response.read()
    try:
        body: Any = loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")[:2000]
    return UpstreamStatus(response.status, body, response.headers)
