"""Scrub personally identifying information: emails, phones, IPs, card and ID numbers.

Each kind is replaced by a placeholder (`<EMAIL>`, `<PHONE>`, ...) and counted. Card
numbers are only replaced when their digits pass the Luhn check, so that ordinary
long numbers (order numbers, timestamps) are kept.
"""

from __future__ import annotations

import re
from collections import Counter

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\d.]|\.\d)")
_IPV6 = re.compile(r"(?<![:\w])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![:\w])")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# US social security numbers and 18-character Chinese resident identity numbers.
_ID = re.compile(r"(?<!\d)(?:\d{3}-\d{2}-\d{4}|\d{17}[\dXx])(?![\dA-Za-z])")
_PHONE = re.compile(
    # Not inside a longer run of digit groups (an order or card number).
    r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"
    r"\d{3,4}[ .-]\d{3,4}(?![ .-]?\d)"
    r"|(?<![\w+])\+\d{10,14}(?!\d)"
)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (credit cards pass it)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def find_pii(text: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every PII span in `text`, in order."""
    masked, spans = text, []

    def mask(kind: str, pattern: re.Pattern, check=None) -> None:  # noqa: ANN001
        nonlocal masked
        def sub(match: re.Match) -> str:
            if check is not None and not check(match.group(0)):
                return match.group(0)
            spans.append((match.start(), match.end(), kind))
            return "\x00" * (match.end() - match.start())
        masked = pattern.sub(sub, masked)

    mask("EMAIL", _EMAIL)
    mask("IP", _IPV4)
    mask("IP", _IPV6)
    mask("CARD", _CARD, lambda s: luhn_valid(re.sub(r"\D", "", s)))
    mask("ID", _ID)
    mask("PHONE", _PHONE)
    return sorted(spans)


def scrub_pii(text: str, counts: Counter[str] | None = None) -> str:
    """Replace PII in `text`; add what was replaced, by kind, to `counts`."""
    counts = counts if counts is not None else Counter()
    out, pos = [], 0
    for start, end, kind in find_pii(text):
        out += [text[pos:start], f"<{kind}>"]
        counts[kind] += 1
        pos = end
    return "".join(out) + text[pos:]
