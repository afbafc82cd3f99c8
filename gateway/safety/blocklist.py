"""Blocklists: terms (whole words), phrases and regexes, matched on normalized text (`normalize`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.safety.normalize import normalize


class Blocklist:
    """One compiled pattern for all entries; `find` answers the first entry that matches, as written in the policy."""

    def __init__(self, terms: Sequence[str] = (), phrases: Sequence[str] = (), regexes: Sequence[str] = ()) -> None:
        parts, self._names = [], []
        for kind, entries in (("term", terms), ("phrase", phrases)):
            for entry in entries:
                words = normalize(entry).strip()
                if words:
                    parts.append(rf"(?<!\w){re.escape(words)}(?!\w)")
                    self._names.append(f"{kind} `{entry}`")
        for entry in regexes:
            re.compile(entry)  # a bad regex is a load-time error, named by the caller
            parts.append(f"(?:{entry})")
            self._names.append(f"regex `{entry}`")
        self._pattern = re.compile("|".join(f"({p})" for p in parts)) if parts else None
        self.longest = max((len(normalize(e)) for e in (*terms, *phrases)), default=0)

    def find(self, text: str) -> str | None:
        """The entry that matches `text` (after normalization), or None."""
        if self._pattern is None:
            return None
        match = self._pattern.search(normalize(text))
        return self._names[match.lastindex - 1] if match is not None and match.lastindex else None
