"""Fixtures of the Gemini emulator tests: google-genai clients and the base URL of the emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google import genai

from gateway.emulators import Emulator
from tests.emulators.gemini.support import (
    _client,
)


@pytest.fixture(scope="module")
def gurl(emulator: Emulator) -> str:
    assert emulator.base_url
    return emulator.base_url + "/gemini/v1beta/models"


@pytest.fixture(scope="module")
def gclient(emulator: Emulator) -> Iterator[genai.Client]:
    assert emulator.base_url
    c = _client(emulator.base_url)  # keep the reference: a temporary Client closes its transport
    yield c
    c.close()


@pytest.fixture(scope="module")
def quick(emulator: Emulator) -> Iterator[genai.Client]:
    assert emulator.base_url
    c = _client(emulator.base_url, timeout_ms=500)
    yield c
    c.close()
