"""Text cleaning: Unicode NFKC, control characters, whitespace."""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"[^\S\n]+")  # runs of whitespace other than newlines
_TRAILING = re.compile(r" +\n")
_BLANK_LINES = re.compile(r"\n{3,}")
_KEEP_CONTROL = {"\n", "\t"}


def clean_text(text: str) -> str:
    """Normalise one document.

    NFKC folds compatibility forms (full-width letters, ligatures) into their plain
    characters; control and format characters (NUL, BEL, zero-width spaces, BOM) are
    dropped; tabs and runs of spaces become one space; CRLF becomes LF; at most one
    blank line is kept between paragraphs; the ends are stripped.
    """
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = "".join(
        ch for ch in text
        if ch in _KEEP_CONTROL or unicodedata.category(ch) not in ("Cc", "Cf")
    )
    text = _SPACES.sub(" ", text)
    text = _TRAILING.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()
