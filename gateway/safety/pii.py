"""PII detectors: where each entity type occurs in a text, validated where a checksum or a parser can say
(payment cards by Luhn, IBANs and national ids by python-stdnum, phone numbers by phonenumbers, IPs by
ipaddress), so a random number does not read as a card."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import phonenumbers
from stdnum import iban, luhn
from stdnum.es import dni
from stdnum.fr import nir
from stdnum.it import codicefiscale
from stdnum.us import ssn


@dataclass(frozen=True, slots=True)
class Span:
    """One finding: `text[start:end]` is an entity of this type."""

    start: int
    end: int
    entity: str


def _digits(value: str) -> str:
    return re.sub(r"[^0-9A-Za-z]", "", value)


def _card(value: str) -> bool:
    number = _digits(value)
    return 13 <= len(number) <= 19 and luhn.is_valid(number)


def _ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _ipv6(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return value.count(":") >= 2


def _national_id(value: str) -> bool:
    compact = _digits(value).upper()
    return any(module.is_valid(compact) for module in (dni, codicefiscale, nir))


Check = Callable[[str], bool]
_DIGIT = re.compile(r"\d")
# a run that holds digits (and the separators numbers are written with): digit-led detectors look only in these,
# so the text is scanned once for all of them (prose with a few numbers: a few short runs)
_REGION = re.compile(r"[+(]?\d(?:[\d .()/-]*\d)?[A-Z]?")


@dataclass(frozen=True, slots=True)
class Detector:
    """One pattern of an entity type: candidates, the validator that decides (None: the pattern is enough), a cheap
    gate on the whole text, whether it looks only in digit runs, and what may not touch it (`number`: digits or a
    dash or dot before more digits; `word`: letters or digits)."""

    entity: str
    pattern: re.Pattern[str]
    valid: Check | None = None
    gate: Callable[[str], bool] | None = None
    in_digits: int = 0  # > 0: looks only in digit runs at least this long (a shorter run cannot hold one)
    needs_digit: bool = False
    apart: str | None = None


DETECTORS: tuple[Detector, ...] = (
    Detector("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
             gate=lambda t: "@" in t),
    Detector("card", re.compile(r"\d(?:[ -]?\d){12,18}"), _card, in_digits=13, apart="number"),
    Detector("ssn", re.compile(r"\d{3}-\d{2}-\d{4}"), ssn.is_valid, in_digits=11, apart="number"),
    Detector("ip", re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"), _ipv4, in_digits=7, apart="number"),
    # ES DNI and FR NIR in digit runs; IT codice fiscale anywhere
    Detector("national_id", re.compile(r"\d{8}[A-Z]|[12] ?\d{2} ?\d{2} ?\d{2} ?\d{3} ?\d{3} ?\d{2}"), _national_id,
             in_digits=9, apart="word"),
    Detector("national_id", re.compile(r"[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]"), _national_id, needs_digit=True,
             apart="word"),
    Detector("iban", re.compile(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}"), iban.is_valid, needs_digit=True, apart="word"),
    Detector("aws_key", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"),
             gate=lambda t: "A" in t),
    Detector("api_key", re.compile(r"\b(?:sk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{36,}"
                                   r"|xox[abpr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20})"),
             gate=lambda t: any(p in t for p in ("sk-", "gh", "xox", "AIza", "glpat-"))),
)  # fmt: skip
_HEX = frozenset("0123456789abcdefABCDEF:.")
ENTITIES = ("email", "phone", "card", "iban", "ssn", "national_id", "ip", "aws_key", "api_key")
LONGEST = 64  # characters: the longest entity the stream guard must see whole (an IBAN with spaces is 42)
_HEX_RUN = re.compile(r"[0-9A-Fa-f:.]*")


def _phones(text: str, runs: list[tuple[int, int]], region: str) -> Iterator[Span]:
    """Phone numbers, parsed only where a digit run is long enough to be one (with the character before it)."""
    for start, end in runs:
        lo = max(0, start - 1)
        for match in phonenumbers.PhoneNumberMatcher(text[lo : end + 1], region, leniency=phonenumbers.Leniency.VALID):
            yield Span(lo + match.start, lo + match.end, "phone")


def _ipv6s(text: str) -> Iterator[Span]:
    """IPv6 addresses, found from the colons (a text has few): the run of hex digits, colons and dots around each."""
    at = text.find(":")
    while at >= 0:
        start = at
        while start > 0 and text[start - 1] in _HEX:
            start -= 1
        end = _HEX_RUN.match(text, at).end()  # type: ignore[union-attr]
        value = text[start:end].rstrip(".")
        if value.count(":") >= 2 and _ipv6(value) and _apart(text, start, start + len(value)):
            yield Span(start, start + len(value), "ip")
        at = text.find(":", max(end, at + 1))


def _apart(text: str, start: int, end: int) -> bool:
    """Not glued to a longer word (letters, digits, an underscore on either side)."""
    before, after = text[start - 1 : start], text[end : end + 1]
    return not ((before.isalnum() or before == "_") or (after.isalnum() or after == "_"))


def _isolated(text: str, start: int, end: int) -> bool:
    """Not part of a longer number: no digit next to it, nor a dash or dot that a digit follows (`1.2.3.4.5`)."""
    before, before2 = text[start - 1 : start], text[max(0, start - 2) : start - 1]
    after, after2 = text[end : end + 1], text[end + 1 : end + 2]
    glued = before.isdigit() or after.isdigit()
    return not (glued or (before in ("-", ".") and before2.isdigit()) or (after in ("-", ".") and after2.isdigit()))


def find(text: str, entities: frozenset[str], region: str = "US") -> list[Span]:
    """Every finding of the asked entity types, overlaps resolved (the earliest, then the longest, wins)."""
    found: list[Span] = []
    digits = _DIGIT.search(text) is not None
    runs = [m.span() for m in _REGION.finditer(text)] if digits else []
    for d in DETECTORS:
        if d.entity not in entities or (d.needs_digit and not digits) or (d.gate is not None and not d.gate(text)):
            continue
        if d.in_digits:
            long = [(max(0, lo - 1), hi + 1) for lo, hi in runs if hi - lo >= d.in_digits]
            matches: Iterable[re.Match[str]] = (m for lo, hi in long for m in d.pattern.finditer(text, lo, hi))
        else:
            matches = d.pattern.finditer(text)
        for m in matches:
            start, end = m.span()
            if d.apart == "number" and not _isolated(text, start, end):
                continue
            if d.apart == "word" and not _apart(text, start, end):
                continue
            if d.valid is None or d.valid(m.group()):
                found.append(Span(start, end, d.entity))
    if "ip" in entities and ":" in text:
        found.extend(_ipv6s(text))
    if "phone" in entities:
        found.extend(_phones(text, [r for r in runs if r[1] - r[0] >= 7], region))
    found.sort(key=lambda s: (s.start, -(s.end - s.start)))
    kept: list[Span] = []
    for span in found:
        if not kept or span.start >= kept[-1].end:
            kept.append(span)
    return kept
