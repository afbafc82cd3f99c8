"""Text as the blocklist sees it: NFKC, case-folded, zero-width and control characters stripped, whitespace
collapsed, so trivial evasions (full-width letters, soft hyphens, `b\u200bad`, doubled spaces) do not pass."""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")
# what is dropped before matching: format characters (zero-width space/joiners, soft hyphen, BOM, bidi marks)
# and controls other than whitespace
_DROPPED = {"Cf", "Cc", "Co", "Cs"}
_KEPT = frozenset("\t\n\r\f\v ")


def invisible(ch: str) -> bool:
    return ch not in _KEPT and unicodedata.category(ch) in _DROPPED


def normalize(text: str) -> str:
    if text.isascii() and text.isprintable():  # the common case: nothing to strip or fold but case and spaces
        return _SPACE.sub(" ", text.casefold())
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", "".join(ch for ch in folded if not invisible(ch)))


def visible_tail(text: str, chars: int) -> int:
    """Where the last `chars` characters that matching sees begin (invisible characters and whitespace runs
    beyond the first do not count): the stream guard holds back text from there."""
    seen, prev_space = 0, False
    for i in range(len(text) - 1, -1, -1):
        ch = text[i]
        if invisible(ch):
            continue
        space = ch.isspace()
        if not (space and prev_space):
            seen += 1
        prev_space = space
        if seen >= chars:
            return i
    return 0
