"""The `Emulator`: one aiohttp app mounting every provider module, plus control endpoints and runners."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from aiohttp import web

from gateway.emulators import anthropic as anthropic_emulator
from gateway.emulators import bedrock as bedrock_emulator
from gateway.emulators import gemini as gemini_emulator
from gateway.emulators import openai as openai_emulator
from gateway.emulators.config import EmulatorContext, EmulatorSettings
from gateway.emulators.faults import CATALOGUE
from gateway.emulators.recorder import Recorder

Register = Callable[[web.Application, EmulatorContext], None]
PROVIDERS: tuple[Register, ...] = (
    openai_emulator.register,
    anthropic_emulator.register,
    gemini_emulator.register,
    bedrock_emulator.register,
)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is importable, else a stock asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Emulator:
    """Wire-level provider emulator; `start()` in a running loop, or `start_in_thread()` from sync code."""

    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self.recorder = Recorder(self.settings.recorder_maxlen)
        self.context = EmulatorContext(self.settings, self.recorder)
        self.base_url: str | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.client_max_size)
        for register in PROVIDERS:
            register(app, self.context)
        app.router.add_get("/health", self._health)
        app.router.add_get("/_emulator/requests", self._requests)
        app.router.add_get("/_emulator/billing", self._billing)
        app.router.add_post("/_emulator/reset", self._reset)
        app.router.add_post("/_emulator/outages", self._outage)
        return app

    def reset(self) -> None:
        """Forget recorded requests, billing, 500-once keys and the prompt cache."""
        self.context.reset()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.recorder.requests_json())

    async def _billing(self, request: web.Request) -> web.Response:
        return web.json_response(self.recorder.billing_json())

    async def _outage(self, request: web.Request) -> web.Response:
        """Switch a model down (`{"model", "fault", "seconds"}`: every call gets the fault until then) or back up
        (`seconds: 0`): a provider that fails for a while and recovers, for breaker tests and experiments."""
        body = await request.json()
        model, fault, seconds = body.get("model"), body.get("fault", "503"), float(body.get("seconds", 60))
        if not isinstance(model, str) or fault not in CATALOGUE:
            return web.json_response({"error": f"need a model and a fault from: {', '.join(CATALOGUE)}"}, status=400)
        self.set_outage(model, fault, seconds)
        return web.json_response({"model": model, "fault": fault, "seconds": seconds})

    def set_outage(self, model: str, fault: str = "503", seconds: float = 60.0) -> None:
        if seconds <= 0:
            self.context.outages.pop(model, None)
        else:
            self.context.outages[model] = (fault, time.monotonic() + seconds)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"status": "reset"})

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0 = any free port) and return the base URL, e.g. `http://127.0.0.1:8900`."""
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.base_url = f"http://{shown}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        self.base_url = None

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 10.0) -> str:
        """Run the emulator on its own event loop in a daemon thread; returns the base URL."""
        if self._thread is not None:
            raise RuntimeError("emulator thread already running")
        loop = new_event_loop()
        ready = threading.Event()
        outcome: list[BaseException | str] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                outcome.append(loop.run_until_complete(self.start(host, port)))
            except BaseException as exc:  # reported to the caller below
                outcome.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        thread = threading.Thread(target=run, name="llm-emulator", daemon=True)
        thread.start()
        if not ready.wait(timeout_s) or not outcome:
            raise RuntimeError("emulator did not start in time")
        if isinstance(outcome[0], BaseException):
            thread.join()
            raise outcome[0]
        self._thread, self._loop = thread, loop
        return outcome[0]

    def stop_thread(self, timeout_s: float = 10.0) -> None:
        """Stop a `start_in_thread` emulator and join its thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        self._thread = self._loop = None
