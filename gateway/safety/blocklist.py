"""Blocklists: terms (whole words), phrases and regexes, matched on normalized text (`normalize`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.safety.normalize import normalize


class Blocklist:
    """One compiled pattern for all entries; `find` answers the first entry that matches, as written in the policy."""

    def __init__(self, terms: Sequence[str] = (), phrases: Sequence[str] = (), regexes: Sequence[str] = ()) -> None:
        # literal entries: a substring search first (fast), then whole words checked where one is found
        self._literals: list[tuple[str, re.Pattern[str], str]] = []
        for kind, entries in (("term", terms), ("phrase", phrases)):
            for entry in entries:
                words = normalize(entry).strip()
                if words:
                    self._literals.append((words, re.compile(rf"(?<!\w){re.escape(words)}(?!\w)"), f"{kind} `{entry}`"))
        self._regexes = [(re.compile(entry), f"regex `{entry}`") for entry in regexes]
        self.longest = max((len(normalize(e)) for e in (*terms, *phrases)), default=0)

    def find(self, text: str) -> str | None:
        """The entry that matches `text` (after normalization), or None."""
        if not (self._literals or self._regexes):
            return None
        seen = normalize(text)
        for words, whole, name in self._literals:
            if words in seen and whole.search(seen):
                return name
        return next((name for pattern, name in self._regexes if pattern.search(seen)), None)
