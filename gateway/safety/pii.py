"""PII detectors: where each entity type occurs in a text, validated where a checksum or a parser can say
(payment cards by Luhn, IBANs and national ids by python-stdnum, phone numbers by phonenumbers, IPs by
ipaddress), so a random number does not read as a card."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
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
# entity -> (candidate pattern, validator or None, a cheap gate on the whole text). A pattern finds candidates (it
# starts with a character class, so the regex engine skips ahead fast); the validator decides; the gate skips
# the pattern on texts that cannot hold one (prose without digits: a few microseconds for all of them).
_DIGIT = re.compile(r"\d")


def _digit(_: str) -> bool:
    return True  # a digit-gated pattern: `find` checks once per text whether it has any digit


PATTERNS: dict[str, tuple[re.Pattern[str], Check | None, Callable[[str], bool]]] = {
    "email": (
        re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
        None,
        lambda t: "@" in t,
    ),
    "card": (re.compile(r"\d(?:[ -]?\d){12,18}"), _card, _digit),
    "iban": (re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"), iban.is_valid, _digit),
    "ssn": (re.compile(r"\d{3}-\d{2}-\d{4}"), ssn.is_valid, lambda t: "-" in t),
    "national_id": (  # ES DNI, IT codice fiscale, FR NIR
        re.compile(
            r"\b(?:\d{8}[A-Z]|[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]"
            r"|[12] ?\d{2} ?\d{2} ?\d{2} ?\d{3} ?\d{3} ?\d{2})\b"
        ),
        _national_id,
        _digit,
    ),
    "ipv4": (re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"), _ipv4, lambda t: "." in t),
    "ipv6": (re.compile(r"[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:[0-9A-Fa-f:]*"), _ipv6, lambda t: "::" in t or t.count(":") > 3),
    "aws_key": (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"), None, lambda t: "A" in t),
    "api_key": (
        re.compile(
            r"\b(?:sk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{36,}"
            r"|xox[abpr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20})"
        ),
        None,
        lambda t: any(p in t for p in ("sk-", "gh", "xox", "AIza", "glpat-")),
    ),
}
_NUMERIC = frozenset({"card", "ssn", "ipv4"})  # glued to more digits (or a dash, a dot): part of a longer number
ALIASES = {"ip": ("ipv4", "ipv6")}
ENTITIES = ("email", "phone", "card", "iban", "ssn", "national_id", "ip", "aws_key", "api_key")
LONGEST = 64  # characters: the longest entity the stream guard must see whole (an IBAN with spaces is 42)
_PHONE_HINT = re.compile(r"\+?\d[\d ().-]{5,}\d")  # a run that could be a phone number: only these are parsed


def _phones(text: str, region: str) -> Iterator[Span]:
    for hint in _PHONE_HINT.finditer(text):
        lo = max(0, hint.start() - 1)
        for match in phonenumbers.PhoneNumberMatcher(text[lo : hint.end() + 1], region,
                                                     leniency=phonenumbers.Leniency.VALID):  # fmt: skip
            yield Span(lo + match.start, lo + match.end, "phone")


def _isolated(text: str, start: int, end: int) -> bool:
    """Not part of a longer number: no digit next to it, nor a dash or dot that a digit follows (`1.2.3.4.5`)."""
    before, before2 = text[start - 1 : start], text[max(0, start - 2) : start - 1]
    after, after2 = text[end : end + 1], text[end + 1 : end + 2]
    glued = before.isdigit() or after.isdigit()
    return not (glued or (before in ("-", ".") and before2.isdigit()) or (after in ("-", ".") and after2.isdigit()))


def patterns_of(entities: frozenset[str]) -> frozenset[str]:
    """The detector names behind entity types (`ip` is IPv4 and IPv6)."""
    return frozenset(p for e in entities for p in ALIASES.get(e, (e,)))


def find(text: str, entities: frozenset[str], region: str = "US") -> list[Span]:
    """Every finding of the asked entity types, overlaps resolved (the earliest, then the longest, wins)."""
    found: list[Span] = []
    digits = _DIGIT.search(text) is not None
    for name in patterns_of(entities):
        if name == "phone":
            if digits:
                found.extend(_phones(text, region))
            continue
        pattern, valid, gate = PATTERNS[name]
        if (gate is _digit and not digits) or not gate(text):
            continue
        entity = "ip" if name in ALIASES["ip"] else name
        for m in pattern.finditer(text):
            if (valid is None or valid(m.group())) and (name not in _NUMERIC or _isolated(text, m.start(), m.end())):
                found.append(Span(m.start(), m.end(), entity))
    found.sort(key=lambda s: (s.start, -(s.end - s.start)))
    kept: list[Span] = []
    for span in found:
        if not kept or span.start >= kept[-1].end:
            kept.append(span)
    return kept
