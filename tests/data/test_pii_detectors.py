"""The PII detectors against checksum formulas written out here, formats, hard negatives."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from zenlm.data.pii import find_pii, scrub_pii


def luhn_check_digit(body: str) -> str:
    """Double every second digit from the right of body+check, subtract 9 above 9."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        v = int(ch) * 2 if i % 2 == 0 else int(ch)
        total += v - 9 if v > 9 else v
    return str(-total % 10)


def iban_check_digits(country: str, bban: str) -> str:
    """ISO 13616: 98 - int(BBAN + country letters as 10..35 + "00") mod 97."""
    number = "".join(str(ord(c) - 55) if c.isalpha() else c for c in bban + country + "00")
    return f"{98 - int(number) % 97:02d}"


def gb11643_check(body: str) -> str:
    """GB 11643-1999: sum of digit * (2^(17-i) mod 11), mapped through 1 0 X 9 8 ... 2."""
    total = sum(int(d) * pow(2, 17 - i, 11) for i, d in enumerate(body))
    return "10X98765432"[total % 11]


def kinds(text: str) -> list[tuple[str, str]]:
    return [(text[s:e], k) for s, e, k in find_pii(text)]


def test_cards_follow_luhn_written_out():
    rng = random.Random(0)
    for prefix, length in [("4", 16), ("52", 16), ("37", 15), ("6011", 16), ("62", 19)]:
        for _ in range(5):
            body = prefix + "".join(rng.choice("0123456789") for _ in range(length - 1 - len(prefix)))
            good = body + luhn_check_digit(body)
            bad = body + str((int(luhn_check_digit(body)) + 3) % 10)
            spaced = " ".join(good[i:i + 4] for i in range(0, len(good), 4))
            assert kinds(f"card {good} ok") == [(good, "CARD")]
            assert kinds(f"卡号{spaced}。") == [(spaced, "CARD")]
            assert all(k != "CARD" for _, k in kinds(f"card {bad} ok")), bad


def test_ibans_follow_mod97_written_out():
    bbans = {"DE": "370400440532013000", "GB": "NWBK60161331926819", "FR": "20041010050500013M02606",
             "NL": "ABNA0417164300", "IT": "X0542811101000000123456"}
    for country, bban in bbans.items():
        check = iban_check_digits(country, bban)
        iban = country + check + bban
        grouped = " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))
        assert kinds(f"IBAN {iban}, BIC DEUTDEFF") == [(iban, "IBAN")]
        assert kinds(f"收款账户IBAN：{grouped}。") == [(grouped, "IBAN")]
        wrong = f"{(int(check) + 1 - 2) % 97 + 2:02d}"
        assert kinds(f"IBAN {country}{wrong}{bban} typo") == [], country
    assert iban_check_digits("DE", "370400440532013000") == "89"  # the textbook example


def test_cn_resident_ids_follow_gb11643_written_out():
    assert gb11643_check("11010519491231002") == "X"  # the standard's published example
    rng = random.Random(1)
    for _ in range(20):
        body = f"{rng.choice(['110105', '440305', '310104'])}{rng.randint(1950, 2005)}" \
               f"{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
        good = body + gb11643_check(body)
        bad = body + next(c for c in "0123456789X" if c != gb11643_check(body))
        assert kinds(f"身份证号：{good}，请核对。") == [(good, "ID")]
        assert kinds(f"身份证号：{bad}，请核对。") == []
    body = "11010519490230001"  # 30 February: checksum may pass, the date cannot
    assert kinds(f"ID {body + gb11643_check(body)}") == []


@pytest.mark.parametrize("phone", [
    "(415) 555-2671", "415-555-2671", "+1 415 555 2671", "020 7946 0958", "+44 20 7946 0958",
    "07700 900123", "030 23125678", "+49 151 23456789", "01 42 68 53 00", "+33 6 12 34 56 78",
    "+91 98765 43210", "13812345678", "138 1234 5678", "+86 138 1234 5678", "010-62345678",
    "(0755) 2345 6789", "+81 3-5555-1234", "+61 2 9374 4000",
])
def test_phone_formats(phone):
    assert kinds(f"Call {phone} today.") == [(phone, "PHONE")]
    assert kinds(f"请拨打{phone}联系。") == [(phone, "PHONE")]


def test_ips_both_families():
    for ip in ["192.168.1.20", "8.8.4.4", "2001:db8::1", "fe80::1ff:fe23:4567:890a",
               "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "::ffff:192.0.2.1", "2409:8A00:1:2::5"]:
        assert kinds(f"from {ip}.") == [(ip, "IP")]
        assert kinds(f"来自{ip}的请求") == [(ip, "IP")]


def test_passports_need_the_word():
    assert kinds("Passport number E12345678, issued 2020-05-01.") == [("E12345678", "PASSPORT")]
    assert kinds("护照号码：EA1234567。") == [("EA1234567", "PASSPORT")]
    assert kinds("My passport is L3677672, his passport no. was 512345678.") == [
        ("L3677672", "PASSPORT"), ("512345678", "PASSPORT")]
    assert kinds("Reference E12345678 was shipped.") == []


@pytest.mark.parametrize("text", [
    "Meeting on 2024-03-15 at 14:30:05, or 15/03/2024, 3/15/2024, 15.3.2024, 20240315.",
    "2024年3月15日下午3点，时间戳 2024-03-15T14:30:05Z。",
    "Invoice INV-2024-004512 and order #88123456, PO 2024-0315-7781.",
    "订单号202403151234567890已发货，运单号SF123456789012。",
    "Version v2.10.3, build 10.0.19045.2965, Chrome 120.0.6099.109, release 1.2.3.4.",
    "版本 3.2.1.5 和固件 1.0.0.12。",
    "Price $1,299.99, €3.450,00, ¥12,800.00, ₹1,23,456, 12800元.",
    "ISBN 978-3-16-148410-0 and 9787111547426.",
    "UPS 1Z999AA10123456784, USPS 9400 1000 0000 0000 0000 00.",
    "Population 1,402,112,000; pi 3.14159; 39.9042, 116.4074; 16472 and 90878 visitors.",
    "Card 4111 1111 1111 1112 fails Luhn; IBAN NL70 CNHL 0580 1608 09 fails mod-97.",
    "Srichaphan won 3-6 6-4 7-6 (7/5); Luczak lost 7-6 (7-5) 4-6 6-3 4-6 6-0.",
    "Isaac Newton (1643-1727); Latitude: 38.8895, Longitude: -77.0352 1600 Pennsylvania Ave.",
    "Count: 1 2  3  4  5  6  7  8  9  10. Sort 52 58 40 26 58 52 40 26. Law : Justice :: Medicine.",
    "Order no. 4111 1111 1111 1111 passes Luhn but is labelled an order; 订单号：5555555555554444。",
])
def test_hard_negatives_are_kept(text):
    assert find_pii(text) == [], kinds(text)
    assert scrub_pii(text) == text


def test_scrub_keeps_everything_else_byte_identical():
    parts = ["Dear 李雷,\n  write to ", " or call\t", " (ext. 12), pay to ", "；身份证",
             "。  Ünïcödé stays, 2024-03-15 stays.\r\n"]
    pii = ["li.lei@example.cn", "+86 138 1234 5678", "DE89 3704 0044 0532 0130 00",
           "11010519491231002X"]
    kinds_ = ["EMAIL", "PHONE", "IBAN", "ID"]
    text = parts[0] + "".join(p + parts[i + 1] for i, p in enumerate(pii))
    expected = parts[0] + "".join(f"<{k}>" + parts[i + 1] for i, k in enumerate(kinds_))
    counts: Counter[str] = Counter()
    assert scrub_pii(text, counts) == expected
    assert counts == Counter(kinds_)


def test_presidio_agrees_on_cards_and_ibans():
    """Presidio's own validated recognizers find the same card and IBAN spans."""
    presidio = pytest.importorskip("presidio_analyzer.predefined_recognizers")
    text = ("Pay 4111 1111 1111 1111 or IBAN GB82 WEST 1234 5698 7654 32; "
            "not 4111 1111 1111 1112.")
    found = {(r.start, r.end) for rec, ent in [(presidio.CreditCardRecognizer(), "CREDIT_CARD"),
                                               (presidio.IbanRecognizer(), "IBAN_CODE")]
             for r in rec.analyze(text, [ent], None)}
    assert found == {(s, e) for s, e, _ in find_pii(text)}


def test_overlaps_go_to_the_earlier_kind_once():
    text = "邮箱13812345678@example.cn，IBAN DE89 3704 0044 0532 0130 00，手机13812345678。"
    assert kinds(text) == [("13812345678@example.cn", "EMAIL"),
                           ("DE89 3704 0044 0532 0130 00", "IBAN"), ("13812345678", "PHONE")]
