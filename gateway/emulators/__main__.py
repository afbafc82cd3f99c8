"""Command line: `python -m gateway.emulators --host 127.0.0.1 --port 8900` runs the emulator in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal

from gateway.emulators.config import EmulatorSettings
from gateway.emulators.server import Emulator, new_event_loop


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, EmulatorSettings]:
    parser = argparse.ArgumentParser(prog="python -m gateway.emulators", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    defaults = EmulatorSettings()
    for f in dataclasses.fields(EmulatorSettings):
        value, flag = getattr(defaults, f.name), f"--{f.name.replace('_', '-')}"
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, dest=f.name)
        else:
            parser.add_argument(flag, type=type(value), default=value, dest=f.name)
    args = parser.parse_args(argv)
    settings = EmulatorSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EmulatorSettings)})
    return args, settings


async def serve(host: str, port: int, settings: EmulatorSettings) -> None:
    emulator = Emulator(settings)
    url = await emulator.start(host, port)
    print(f"emulator listening on {url}  (OpenAI base_url: {url}/openai/v1)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()
        print("emulator stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    args, settings = parse_args(argv)
    loop = new_event_loop()
    try:
        loop.run_until_complete(serve(args.host, args.port, settings))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
