"""Find and scrub personally identifying information in English and Chinese text.

Kinds (each replaced by a placeholder such as `<EMAIL>` and counted):

- EMAIL: local@domain.tld.
- IP: IPv4 (not after a version word such as "version", "build", "v", 版本) and IPv6 in every
  notation Python's `ipaddress` accepts (compressed, embedded IPv4) with 2+ groups.
- CARD: 13-19 digits (groups of 3+ apart by spaces or dashes) with an issuer prefix and
  length of a card network (Visa, Mastercard, Amex, Discover, JCB, UnionPay, Diners) and a
  valid Luhn digit, not right after an order word ("order", "invoice", "ref", 订单, ...).
- IBAN: country code, check digits and the country's BBAN format (python-stdnum), mod-97 valid.
- ID: Chinese resident ID numbers (18 characters, GB 11643-1999 check character, a real
  birth date) and US social security numbers (SSA's never-issued ranges excluded).
- PASSPORT: a passport-shaped token (a letter or two and 6-8 digits, or 9 digits) right after
  "passport" or 护照 (and its German, French, Spanish words): it has no checksum, so the word
  is required.
- PHONE: what libphonenumber's matcher calls a valid number of one of `PHONE_REGIONS` (any
  "+" international number is valid whatever the region), unless it is glued to letters,
  to a minus sign or to a longer run of digits (INV-2024-123456), follows an order or
  version word, is a decimal, a date, a year range, a version (three dots) or the tail of
  an IBAN-shaped string (`NL70 CNHL 0580 1608 09`, a wrong check digit), has three
  one-digit groups (scores, counting), or has fewer than 7 or more than 12 digits without
  a "+".

The checks are what keeps ordinary numbers (orders, tracking numbers, timestamps, prices,
versions, ISBNs) in the text. Spans never overlap; when two kinds claim the same characters
the one listed earlier in `_DETECTORS` wins. Text outside the spans is kept byte for byte.
Names need a model: `extra` detectors (zenlm.tasks.ner_pii.NameDetector, `<PERSON>`) run last.
"""

from __future__ import annotations

import bisect
import datetime
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn

Span = tuple[int, int, str]  # start, end (exclusive), kind
Detector = Callable[[str], Iterable[Span]]
PHONE_REGIONS = ("CN", "US", "GB", "DE", "FR", "IN")

# ASCII boundaries: a Chinese character next to a number is a boundary, unlike regex's \b.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9_%+-](?:[A-Za-z0-9._%+-]*[A-Za-z0-9_%+-])?"
                    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\d|\w)", re.ASCII)
_VERSION_WORD = re.compile(
    r"(?<![A-Za-z])(?:version|release|build|firmware|ver\.?|v|版本|固件|构建)\s*[:：]?\s*$",
    re.IGNORECASE)
_ORDER_WORD = re.compile(r"(?<![A-Za-z])(?:order|invoice|inv|po|ref|reference|ticket|tracking|"
                         r"订单|单号|发票|工单|运单)"
                         r"\s*(?:no\.?|number|#)?\s*[:：#]?\s*$", re.IGNORECASE)
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|"
                   r"\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\w)", re.ASCII)
_DIGIT_RUN = r"(?<![\w+-])(?<!\d[ -])\d(?:[ -]?\d){%d,%d}(?![\w]|[ -]\d)"
_CARD = re.compile(_DIGIT_RUN % (12, 18), re.ASCII)
# (first digits, allowed lengths) of card networks.
_CARD_NETWORKS = [
    (("4",), (13, 16, 19)),                                                    # Visa
    (tuple(str(p) for p in range(51, 56)) + tuple(str(p) for p in range(2221, 2721)), (16,)),
    (("34", "37"), (15,)),                                                     # Amex
    (("6011", "65") + tuple(str(p) for p in range(644, 650)), (16, 17, 18, 19)),  # Discover
    (tuple(str(p) for p in range(3528, 3590)), (16, 17, 18, 19)),              # JCB
    (("62", "81"), (16, 17, 18, 19)),                                          # UnionPay
    (("36", "38", "39") + tuple(str(p) for p in range(300, 306)), (14, 16)),   # Diners
]
_IBAN = re.compile(r"(?<![0-9a-z])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}")
_CN_ID = re.compile(r"(?<![\w-])[1-9]\d{5}(?:19|20)\d{9}[\dXx](?!\w)", re.ASCII)
_SSN = re.compile(r"(?<![\w-])(?!000|666|9)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])", re.ASCII)
_PASSPORT = re.compile(
    r"(?:passport|reisepass|passeport|pasaporte|护照|護照)"
    r"(?:[\s-]*(?:no\.?|number|nr\.?|n°|#|号码?|號碼?|编号))?"
    r"(?:[\s:：,，是为為]|\b(?:is|was|reads)\b)*"
    r"(?P<number>(?=[A-Z]*\d)(?:[A-Z]{1,2}\d{6,8}|\d{9}|\d{2}[A-Z]{2}\d{5}|"
    r"[CFGHJKLMNPRTVWXYZ][CFGHJKLMNPRTVWXYZ0-9]{8}))(?!\w)", re.IGNORECASE)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (credit cards pass it)."""
    return luhn.is_valid(digits)


def _card_ok(text: str) -> bool:
    if min(len(group) for group in re.split(r"[ -]", text)) < 3:
        return False  # cards are printed in groups of 4 (Amex 4-6-5); "52 58 40 26" is a list
    digits = re.sub(r"\D", "", text)
    network = any(digits.startswith(prefixes) and len(digits) in lengths
                  for prefixes, lengths in _CARD_NETWORKS)
    return network and luhn.is_valid(digits)


def _cards(text: str) -> Iterator[Span]:
    """Card-shaped, network-prefixed, Luhn-valid, and not labelled as an order number."""
    for match in _CARD.finditer(text):
        if _card_ok(match.group(0)) and not _ORDER_WORD.search(
                text[max(0, match.start() - 16):match.start()]):
            yield match.start(), match.end(), "CARD"


def cn_id_valid(number: str) -> bool:
    """GB 11643-1999: ISO 7064 MOD 11-2 check character and a real birth date (YYYYMMDD)."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    remainder = sum(int(d) * w for d, w in zip(number[:17], weights, strict=True)) % 11
    if "10X98765432"[remainder] != number[17].upper():
        return False
    try:
        born = datetime.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    return born <= datetime.date.today()


def _regex(kind: str, pattern: re.Pattern, check: Callable[[str], bool] | None = None,
           group: int | str = 0) -> Callable[[str], Iterator[Span]]:
    def detect(text: str) -> Iterator[Span]:
        for match in pattern.finditer(text):
            if check is None or check(match.group(group)):
                yield match.start(group), match.end(group), kind
    return detect


def _ipv4(text: str) -> Iterator[Span]:
    for match in _IPV4.finditer(text):
        if not _VERSION_WORD.search(text[max(0, match.start() - 12):match.start()]):
            yield match.start(), match.end(), "IP"


def _ipv6_ok(text: str) -> bool:
    if len(re.findall(r"[0-9A-Fa-f]+", text)) < 2:  # "::" and "::1" identify nobody
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _iban(text: str) -> Iterator[Span]:
    """The longest valid IBAN at each candidate (the pattern may run into the next word)."""
    for match in _IBAN.finditer(text):
        candidate = match.group(0)
        for end in range(len(candidate), 14, -1):
            if candidate[end - 1] != " " and stdnum_iban.is_valid(candidate[:end]) and (
                    end == len(candidate) or candidate[end] == " "):
                yield match.start(), match.start() + end, "IBAN"
                break


_IBAN_HEAD = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: [A-Z0-9]{4})+ $")
_YEARS = re.compile(r"^\(?(?:1[5-9]|20)\d\d\s*[-–]\s*(?:1[5-9]|20)\d\d\)?$")
_DATE = re.compile(r"(?:19|20)\d\d[./-]\d{1,2}[./-]\d{1,2}(?!\d)|"
                   r"\d{1,2}[./-]\d{1,2}[./-](?:19|20)\d\d")


def _phone_ok(text: str, start: int, end: int) -> bool:
    """The PHONE rules of the module docstring, on the matcher's span of `text`."""
    raw = text[start:end]
    before, after = text[max(0, start - 2):start], text[end:end + 2]
    if re.search(r"[A-Za-z#-]$|[A-Za-z0-9][-/.:]$", before) or re.match(
            r"[-/.:][0-9A-Za-z]|\w", after, re.ASCII) or _DATE.match(raw):
        return False
    national_digits = 0 if raw.startswith("+") else len(re.sub(r"\D", "", raw))
    if raw.count(".") >= 3 or re.fullmatch(r"\d+\.\d+", raw) or not (
            national_digits == 0 or 7 <= national_digits <= 12):
        return False
    if len(re.findall(r"(?<!\d)\d(?!\d)", raw)) >= 3 or _YEARS.search(raw):
        return False  # scores (6-4 7-6), counting (1 2 3), year ranges (1643-1727)
    window = text[max(0, start - 16):start]
    if _IBAN_HEAD.search(text[max(0, start - 40):start]):
        return False  # the tail of an IBAN that failed its check digits
    return not (_VERSION_WORD.search(window) or _ORDER_WORD.search(window))


_SEVEN_DIGITS = re.compile(r"\d(?:\D{0,4}\d){6}")


def _phones(text: str) -> Iterator[Span]:
    if not _SEVEN_DIGITS.search(text):  # no number can be a phone; the matcher is slow
        return
    for region in PHONE_REGIONS:
        # The matcher gives up after max_tries candidates (65535 by default): not in a long
        # document full of numbers.
        for match in phonenumbers.PhoneNumberMatcher(text, region, max_tries=len(text) + 1):
            if _phone_ok(text, match.start, match.end):
                yield match.start, match.end, "PHONE"


_DETECTORS: list[Detector] = [
    _regex("EMAIL", _EMAIL),
    _regex("IP", _IPV6, _ipv6_ok),
    _ipv4,
    _iban,
    _regex("ID", _CN_ID, cn_id_valid),
    _cards,
    _regex("ID", _SSN),
    _regex("PASSPORT", _PASSPORT, group="number"),
    _phones,
]


def find_pii(text: str, extra: Sequence[Detector] = ()) -> list[Span]:
    """(start, end, kind) of every PII span in `text`, sorted, never overlapping.

    Args:
        text: Any text.
        extra: More detectors (e.g. a NER model's person names), after the built-in ones.
    """
    taken: list[Span] = []  # sorted by start; never overlapping, so sorted by end too
    for detect in [*_DETECTORS, *extra]:
        for span in detect(text):
            i = bisect.bisect_left(taken, span[:1])
            if (i == 0 or taken[i - 1][1] <= span[0]) and (
                    i == len(taken) or span[1] <= taken[i][0]):
                taken.insert(i, span)
    return taken


def scrub_pii(text: str, counts: Counter[str] | None = None,
              extra: Sequence[Detector] = ()) -> str:
    """Replace PII in `text` by `<KIND>`; add what was replaced, by kind, to `counts`."""
    counts = counts if counts is not None else Counter()
    out, pos = [], 0
    for start, end, kind in find_pii(text, extra):
        out += [text[pos:start], f"<{kind}>"]
        counts[kind] += 1
        pos = end
    return "".join(out) + text[pos:]
