"""Session fixtures shared by every test layer: one emulator, the test catalog (with fault models)."""

from __future__ import annotations

import os

import pytest

from gateway.emulators import Emulator, EmulatorSettings
from tests.support import SLOW_FIRST_TOKEN_MS

# botocore switches to bearer auth (and refuses plain-HTTP endpoints) when this is set; tests sign with SigV4.
os.environ.pop("AWS_BEARER_TOKEN_BEDROCK", None)


@pytest.fixture(scope="session")
def emulator() -> Emulator:
    emu = Emulator(EmulatorSettings(slow_first_token_ms=SLOW_FIRST_TOKEN_MS, hang_cap_s=30, stall_cap_s=30))
    emu.start_in_thread("127.0.0.1", 0)
    yield emu
    emu.stop_thread()


@pytest.fixture(scope="session")
def emulator_url(emulator: Emulator) -> str:
    assert emulator.base_url
    return emulator.base_url
