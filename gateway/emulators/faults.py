"""Provider-independent fault catalogue: parsing `-fault-<name>` / `x-emulator-fault` and transport faults."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from aiohttp import web

from gateway.emulators.config import BoundedKeySet

FAULT_SEPARATOR = "-fault-"
HDR_FAULT = "x-emulator-fault"
HDR_KEY = "x-emulator-key"


class FaultKind(enum.StrEnum):
    """Provider-neutral error classes; each provider module maps them onto its wire format."""

    INVALID_REQUEST = "invalid_request"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    RATE_LIMIT = "rate_limit"
    QUOTA = "quota"
    SERVER = "server"
    OVERLOADED = "overloaded"
    CONTEXT_LENGTH = "context_length"


class Behaviour(enum.StrEnum):
    """What the emulator does for a fault."""

    ERROR = "error"  # an HTTP error response (see Fault.error)
    RESET = "reset"  # abort the TCP connection before any response header
    HANG = "hang"  # never respond; wait for the client to go away
    SLOW = "slow"  # delay the first token / the whole response
    CUT = "cut"  # abort the connection mid-body
    STALL = "stall"  # stream a few chunks, then go silent
    MALFORMED = "malformed"  # stream a chunk that is not JSON
    NO_DONE = "no-done"  # clean end of body without the terminal event
    NO_MARKER = "no-marker"  # the whole answer, finish and usage included, then a clean end without the last event
    CONTENT_FILTER = "content-filter"  # 200 with a content-filter finish


@dataclass(frozen=True)
class Fault:
    """One entry of the fault catalogue."""

    name: str
    behaviour: Behaviour
    error: FaultKind | None = None
    retry_after: bool = False
    once: bool = False

    @property
    def is_error(self) -> bool:
        return self.behaviour is Behaviour.ERROR

    @property
    def streams_faultily(self) -> bool:
        return self.behaviour in (Behaviour.CUT, Behaviour.STALL, Behaviour.MALFORMED, Behaviour.NO_DONE)


CATALOGUE: Mapping[str, Fault] = MappingProxyType(
    {
        f.name: f
        for f in (
            Fault("429", Behaviour.ERROR, FaultKind.RATE_LIMIT, retry_after=True),
            Fault("429-no-retry-after", Behaviour.ERROR, FaultKind.RATE_LIMIT),
            Fault("quota", Behaviour.ERROR, FaultKind.QUOTA),
            Fault("401", Behaviour.ERROR, FaultKind.AUTH),
            Fault("500-once", Behaviour.ERROR, FaultKind.SERVER, once=True),
            Fault("503", Behaviour.ERROR, FaultKind.OVERLOADED),
            Fault("context-length", Behaviour.ERROR, FaultKind.CONTEXT_LENGTH),
            Fault("reset", Behaviour.RESET),
            Fault("hang", Behaviour.HANG),
            Fault("slow-first-token", Behaviour.SLOW),
            Fault("cut", Behaviour.CUT),
            Fault("stall", Behaviour.STALL),
            Fault("malformed", Behaviour.MALFORMED),
            Fault("no-done", Behaviour.NO_DONE),
            Fault("no-marker", Behaviour.NO_MARKER),
            Fault("content-filter", Behaviour.CONTENT_FILTER),
        )
    }
)


class UnknownFault(ValueError):
    """Raised for a fault name that is not in the catalogue."""

    def __init__(self, name: str, known: Iterable[str] = CATALOGUE) -> None:
        super().__init__(f"Unknown emulator fault '{name}'. Known faults: {', '.join(sorted(known))}.")
        self.name = name


@dataclass(frozen=True, eq=False)
class FaultTable:
    """The faults one provider accepts: the shared catalogue plus the provider's own names."""

    faults: Mapping[str, Fault]
    listed: tuple[str, ...]  # the names the unknown-fault error message quotes

    @classmethod
    def with_extras(cls, *extra: Fault, list_extras: bool = True) -> FaultTable:
        """The shared catalogue plus `extra`; `list_extras=False` keeps them out of the unknown-fault message."""
        faults = MappingProxyType({**CATALOGUE, **{f.name: f for f in extra}})
        return cls(faults, tuple(sorted(faults if list_extras else CATALOGUE)))


SHARED_FAULTS = FaultTable.with_extras()


def split_model(model: str) -> tuple[str, str | None]:
    """`gpt-4o-mini-fault-429` -> (`gpt-4o-mini`, `429`); a model without a suffix -> (model, None)."""
    base, sep, name = model.rpartition(FAULT_SEPARATOR)
    if not sep or not base:
        return model, None
    return base, name


def parse_fault(model: str, headers: Mapping[str, str], table: FaultTable = SHARED_FAULTS) -> tuple[str, Fault | None]:
    """Return (base model, fault). The model suffix wins over the `x-emulator-fault` header."""
    base, name = split_model(model)
    if name is None:
        name = headers.get(HDR_FAULT) or None
    if name is None:
        return base, None
    fault = table.faults.get(name.strip().lower())
    if fault is None:
        raise UnknownFault(name, table.listed)
    return base, fault


def resolve_fault(
    model: str, headers: Mapping[str, str], table: FaultTable = SHARED_FAULTS
) -> tuple[str, Fault | None, UnknownFault | None]:
    """`parse_fault` that returns an unknown fault name as an `UnknownFault` instead of raising it."""
    try:
        base, fault = parse_fault(model, headers, table)
    except UnknownFault as exc:
        return split_model(model)[0], None, exc
    return base, fault, None


def once_should_fail(fault: Fault, model: str, headers: Mapping[str, str], body: bytes, seen: BoundedKeySet) -> bool:
    """For `once` faults: True the first time a (fault, model, key-or-body-hash) is seen."""
    key = headers.get(HDR_KEY) or hashlib.sha256(body).hexdigest()
    token = f"{fault.name}\x00{model}\x00{key}"
    if token in seen:
        return False
    seen.add(token)
    return True


def abort_connection(request: web.BaseRequest) -> None:
    """Drop the TCP connection at once (RST-like: no FIN handshake, no further bytes)."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def client_gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def wait_for_disconnect(request: web.BaseRequest, cap_s: float, poll_s: float = 0.05) -> bool:
    """Sleep until the client disconnects or `cap_s` passes; True if the client went away."""
    deadline = time.monotonic() + cap_s
    while time.monotonic() < deadline:
        if client_gone(request):
            return True
        await asyncio.sleep(poll_s)
    return client_gone(request)


async def sleep_if(delay_s: float) -> None:
    """`asyncio.sleep` only for a positive delay, so the zero-delay path stays fast."""
    if delay_s > 0:
        await asyncio.sleep(delay_s)
