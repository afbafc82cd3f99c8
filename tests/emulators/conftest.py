"""Fixtures: one session-wide emulator on a background thread, plus OpenAI SDK clients pointed at it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from gateway.emulators import Emulator, EmulatorSettings
from gateway.emulators.recorder import BillingRecord


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    em = Emulator(EmulatorSettings(hang_cap_s=10, stall_cap_s=10))
    em.start_in_thread()
    yield em
    em.stop_thread()


@pytest.fixture(scope="session")
def base_url(emulator: Emulator) -> str:
    assert emulator.base_url
    return emulator.base_url + "/openai/v1"


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=10)
    yield c
    c.close()


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    """A raw HTTP client for wire-level checks (one client: creating one per call costs ~80 ms)."""
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture
def billing_for(emulator: Emulator) -> Callable[[str], BillingRecord]:
    """Look up the billing record of one request (streams are billed after their last byte, so poll)."""

    def lookup(request_id: str, timeout_s: float = 3.0) -> BillingRecord:
        deadline = time.monotonic() + timeout_s
        while True:
            found = [b for b in list(emulator.recorder.billing) if b.request_id == request_id]
            if found:
                assert len(found) == 1, found
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no billing record for {request_id}")
            time.sleep(0.01)

    return lookup


@pytest.fixture
def billed(emulator: Emulator) -> Callable[[str], bool]:
    """Whether a request produced any billing record."""

    def check(request_id: str) -> bool:
        time.sleep(0.05)
        return any(b.request_id == request_id for b in list(emulator.recorder.billing))

    return check
