"""Build benchmarks/data/pii_eval.jsonl: a labelled PII test set, English and Chinese.

Every record is a sentence template (written by hand, below) whose slots are filled by seeded
generators. Card numbers, IBANs and Chinese resident IDs are synthetic: random digits with the
check digit computed here (Luhn, ISO 13616 mod-97, ISO 7064 MOD 11-2); their look-alikes with a
wrong check digit are labelled as hard negatives. Phone numbers are drawn from each country's
numbering plan and kept only when libphonenumber calls them valid, so that no detector is
scored on a number that cannot exist.

Each line: {"id", "lang", "split", "template", "text",
            "spans": [{"start", "end", "type", "value"}],          # PII: must be found
            "negatives": [{"start", "end", "kind", "value"}]}      # hard negatives: must not
The split is by template (every other template of each language is "heldout"), so the
held-out half has sentences whose wording the scrubber's author never looked at.

    python benchmarks/pii_set.py [--out benchmarks/data/pii_eval.jsonl] [--seed 16] [--repeats 6]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
from pathlib import Path

import phonenumbers

R = random.Random()


# ----------------------------------------------------------------- checksums (written out)
def luhn_digit(body: str) -> str:
    """The Luhn check digit to append to `body`."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        v = int(ch) * (2 if i % 2 == 0 else 1)
        total += v - 9 if v > 9 else v
    return str((10 - total % 10) % 10)


def iban_check(country: str, bban: str) -> str:
    """ISO 13616 check digits: 98 - (BBAN + country + "00" as a number) mod 97."""
    moved = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in moved))
    return f"{98 - number % 97:02d}"


def cn_id_check(body: str) -> str:
    """GB 11643-1999 (ISO 7064 MOD 11-2) check character of a 17-digit body."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


# ----------------------------------------------------------------- PII generators
def digits(n: int) -> str:
    return "".join(R.choice(string.digits) for _ in range(n))


def email() -> str:
    first = R.choice(["john", "mary", "li", "wei", "anna", "raj", "sophie", "jens", "zhang",
                      "chen", "o.brien", "priya", "marc", "yuki", "fatima", "lukas"])
    last = R.choice(["smith", "wang", "mueller", "dupont", "patel", "li", "liu", "garcia",
                     "kowalski", "tanaka", "nguyen", "rossi"])
    local = R.choice([f"{first}.{last}", f"{first}_{last}{R.randint(1, 99)}", f"{first[0]}{last}",
                      f"{last}{R.randint(1970, 2005)}", f"{first}+news", f"{first}-{last}"])
    domain = R.choice(["example.com", "example.org", "mail.example.net", "example.co.uk",
                       "example.de", "example.cn", "corp.example.com.cn", "uni-example.edu",
                       "example.fr", "example.in"])
    return f"{local}@{domain}"


def _valid_phone(make, region: str) -> str:
    """Draw from `make` until libphonenumber accepts the number for `region`."""
    for _ in range(1000):
        text = make()
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(text, region)):
                return text
        except phonenumbers.NumberParseException:
            pass
    raise RuntimeError(f"no valid {region} number from {make}")


def _nxx() -> str:
    return str(R.randint(2, 9)) + digits(2)


PHONES = {
    "US": lambda: R.choice([
        lambda a, b, c: f"({a}) {b}-{c}", lambda a, b, c: f"{a}-{b}-{c}",
        lambda a, b, c: f"+1 {a} {b} {c}", lambda a, b, c: f"{a}.{b}.{c}",
        lambda a, b, c: f"+1-{a}-{b}-{c}"])(_nxx(), _nxx(), digits(4)),
    "GB": lambda: R.choice([
        f"020 7{digits(3)} {digits(4)}", f"+44 20 7{digits(3)} {digits(4)}",
        f"07{R.randint(400, 999)} {digits(6)}", f"+44 7{R.randint(400, 999)} {digits(6)}",
        f"0161 {R.randint(200, 999)} {digits(4)}"]),
    "DE": lambda: R.choice([
        f"030 {R.randint(2, 9)}{digits(7)}", f"+49 30 {R.randint(2, 9)}{digits(7)}",
        f"0151 {digits(8)}", f"+49 171 {digits(7)}", f"089 {R.randint(2, 9)}{digits(6)}"]),
    "FR": lambda: R.choice([
        "0{} {} {} {} {}".format(R.randint(1, 5), *(digits(2) for _ in range(4))),
        "+33 {} {} {} {} {}".format(R.randint(1, 5), *(digits(2) for _ in range(4))),
        "06 {} {} {} {}".format(*(digits(2) for _ in range(4))),
        "+33 7 {} {} {} {}".format(*(digits(2) for _ in range(4)))]),
    "IN": lambda: R.choice([
        f"+91 {R.randint(7, 9)}{digits(4)} {digits(5)}",
        f"{R.randint(7, 9)}{digits(4)} {digits(5)}",
        f"+91-{R.randint(7, 9)}{digits(9)}", f"022 {R.randint(2, 6)}{digits(7)}"]),
    "CN": lambda: R.choice([
        f"1{R.choice('3589')}{R.randint(0, 9)}{digits(8)}",
        f"1{R.choice('3589')}{R.randint(0, 9)} {digits(4)} {digits(4)}",
        f"1{R.choice('3589')}{R.randint(0, 9)}-{digits(4)}-{digits(4)}",
        f"+86 1{R.choice('3589')}{R.randint(0, 9)} {digits(4)} {digits(4)}",
        f"+86-1{R.choice('3589')}{R.randint(0, 9)}{digits(8)}",
        f"010-{R.randint(5, 8)}{digits(7)}", f"021-{R.randint(5, 6)}{digits(7)}",
        f"(0755) {R.randint(2, 8)}{digits(3)} {digits(4)}", f"0571-{R.randint(8, 8)}{digits(7)}",
        f"+86 10 {R.randint(5, 8)}{digits(7)}"]),
    "INTL": lambda: R.choice([
        f"+61 2 9{digits(3)} {digits(4)}", f"+81 3-{R.randint(5, 6)}{digits(3)}-{digits(4)}",
        f"+34 91{R.randint(2, 7)} {digits(3)} {digits(3)}", f"+39 06 {digits(4)} {digits(4)}",
        f"+31 20 {R.randint(2, 7)}{digits(2)} {digits(4)}", f"+65 6{digits(3)} {digits(4)}",
        f"+852 2{digits(3)} {digits(4)}", f"+55 11 9{digits(4)}-{digits(4)}"]),
}
PHONE_REGION = {"INTL": "US"}  # "+" numbers parse without a default region


def phone(country: str | None = None) -> str:
    country = country or R.choice(list(PHONES))
    return _valid_phone(PHONES[country], PHONE_REGION.get(country, country))


def phone_cn() -> str:
    return phone("CN")


def ipv4() -> str:
    return R.choice([
        f"192.168.{R.randint(0, 255)}.{R.randint(1, 254)}",
        f"10.{R.randint(0, 255)}.{R.randint(0, 255)}.{R.randint(1, 254)}",
        f"{R.randint(11, 223)}.{R.randint(0, 255)}.{R.randint(0, 255)}.{R.randint(1, 254)}",
        f"172.{R.randint(16, 31)}.{R.randint(0, 255)}.{R.randint(1, 254)}"])


def _h() -> str:
    return f"{R.randint(0, 0xFFFF):x}"


def ipv6() -> str:
    text = R.choice([
        ":".join(_h() for _ in range(8)), f"2001:db8:{_h()}:{_h()}::{_h()}",
        f"fe80::{_h()}:{_h()}:{_h()}:{_h()}", f"2409:8a00:{_h()}:{_h()}::{_h()}",
        f"2001:0db8:85a3:0000:0000:8a2e:{R.randint(0, 0xFFFF):04x}:{R.randint(0, 0xFFFF):04x}",
        f"2001:db8::{_h()}", f"::ffff:{ipv4()}"])
    return text.upper() if R.random() < 0.15 else text


CARD_BRANDS = [  # (prefix generator, length, grouping)
    (lambda: "4", 16, (4, 4, 4, 4)),
    (lambda: str(R.randint(51, 55)), 16, (4, 4, 4, 4)),
    (lambda: str(R.randint(2221, 2720)), 16, (4, 4, 4, 4)),
    (lambda: R.choice(["34", "37"]), 15, (4, 6, 5)),
    (lambda: "6011", 16, (4, 4, 4, 4)),
    (lambda: "35" + str(R.randint(28, 89)), 16, (4, 4, 4, 4)),
    (lambda: "62" + digits(2), 19, (6, 13)),
    (lambda: "62" + digits(2), 16, (4, 4, 4, 4)),
]


def _group(number: str, groups: tuple[int, ...], sep: str) -> str:
    parts, i = [], 0
    for g in groups:
        parts.append(number[i:i + g])
        i += g
    return sep.join(parts)


def _card(valid: bool) -> str:
    prefix, length, groups = R.choice(CARD_BRANDS)
    body = prefix()
    body += digits(length - 1 - len(body))
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + R.randint(1, 9)) % 10)
    return _group(body + check, groups, R.choice([" ", "-", ""]))


def card() -> str:
    return _card(True)


def card_bad() -> str:
    return _card(False)


IBAN_BBAN = {"DE": "8n10n", "GB": "4a6n8n", "FR": "5n5n11c2n", "IT": "1a5n5n12c", "NL": "4a10n",
             "CH": "5n12c", "AT": "5n11n", "PL": "8n16n"}


def _bban(spec: str) -> str:
    out = []
    for count, kind in re.findall(r"(\d+)([nac])", spec):
        pool = {"n": string.digits, "a": string.ascii_uppercase,
                "c": string.digits * 3 + string.ascii_uppercase}[kind]
        out.append("".join(R.choice(pool) for _ in range(int(count))))
    return "".join(out)


def _iban(valid: bool) -> str:
    country = R.choice(list(IBAN_BBAN))
    bban = _bban(IBAN_BBAN[country])
    check = iban_check(country, bban)
    if not valid:
        check = f"{(int(check) + R.randint(1, 50) - 2) % 97 + 2:02d}"
        if check == iban_check(country, bban):
            check = f"{(int(check) + 1 - 2) % 97 + 2:02d}"
    iban = country + check + bban
    if R.random() < 0.6:
        return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))
    return iban


def iban() -> str:
    return _iban(True)


def iban_bad() -> str:
    return _iban(False)


CN_AREAS = ["110105", "110108", "310104", "310115", "440305", "440106", "330106", "510107",
            "420106", "320102", "370202", "500103", "610113", "210102"]


def _cn_id(valid: bool) -> str:
    year = R.randint(1950, 2006)
    body = f"{R.choice(CN_AREAS)}{year}{R.randint(1, 12):02d}{R.randint(1, 28):02d}{digits(3)}"
    check = cn_id_check(body)
    if not valid:
        check = R.choice([c for c in "0123456789X" if c != check])
    return body + check


def cn_id() -> str:
    return _cn_id(True)


def cn_id_bad() -> str:
    return _cn_id(False)


def passport() -> str:
    return R.choice([
        f"{R.choice('ACEFGHJKLMNPRSTUVWXYZ')}{digits(8)}",  # US (2021 on), many others
        f"5{digits(8)}", f"E{R.randint(1, 9)}{digits(7)}", f"EA{digits(7)}",  # UK, CN, CN
        f"C{R.choice('FGHJK')}{digits(1)}{R.choice('XYZ')}{digits(2)}{R.choice('LMN')}{digits(2)}",
        f"{R.choice('JKLMNPZ')}{R.randint(1, 9)}{digits(5)}{R.randint(1, 9)}",  # IN
    ])


# ----------------------------------------------------------------- hard negatives
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]


def date() -> str:
    y, m, d = R.randint(1990, 2030), R.randint(1, 12), R.randint(1, 28)
    return R.choice([f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{m}/{d}/{y}",
                     f"{d}.{m}.{y}", f"{MONTHS[m - 1]} {d}, {y}", f"{y}/{m:02d}/{d:02d}",
                     f"{y}{m:02d}{d:02d}"])


def date_zh() -> str:
    return f"{R.randint(1990, 2030)}年{R.randint(1, 12)}月{R.randint(1, 28)}日"


def time_() -> str:
    return R.choice([f"{R.randint(0, 23):02d}:{R.randint(0, 59):02d}",
                     f"{R.randint(0, 23):02d}:{R.randint(0, 59):02d}:{R.randint(0, 59):02d}",
                     f"{R.randint(1, 12)}:{R.randint(0, 59):02d} pm",
                     f"{R.randint(2020, 2026)}-0{R.randint(1, 9)}-1{R.randint(0, 9)}T"
                     f"{R.randint(10, 23)}:{R.randint(10, 59)}:{R.randint(10, 59)}Z"])


def order() -> str:
    return R.choice([f"#{R.randint(100000, 99999999)}", f"INV-{R.randint(2019, 2026)}-{digits(6)}",
                     f"{R.randint(2019, 2026)}"
                     f"{R.randint(1, 12):02d}{R.randint(1, 28):02d}{digits(8)}",
                     f"{digits(16)}", f"PO {digits(4)}-{digits(4)}-{digits(4)}",
                     f"{R.randint(2019, 2026)}"
                     f"{R.randint(1, 12):02d}{R.randint(1, 28):02d}{digits(10)}",
                     f"SO{digits(10)}", f"{digits(3)}-{digits(7)}-{digits(7)}"])


def version() -> str:
    return R.choice([f"v{R.randint(0, 9)}.{R.randint(0, 30)}.{R.randint(0, 99)}",
                     f"{R.randint(1, 12)}.{R.randint(0, 9)}.{R.randint(0, 9)}.{R.randint(0, 9999)}",
                     f"10.0.{R.randint(10000, 22999)}.{R.randint(1, 3000)}",
                     f"{R.randint(1, 3)}.{R.randint(0, 99)}.{R.randint(0, 99)}-rc{R.randint(1, 5)}",
                     f"{R.randint(100, 140)}.0.{R.randint(1000, 9999)}.{R.randint(10, 250)}"])


def price() -> str:
    return R.choice([f"${R.randint(1, 9)},{digits(3)}.{digits(2)}",
                     f"€{R.randint(5, 999)},{digits(2)}",
                     f"¥{R.randint(1, 99)},{digits(3)}.00", f"£{R.randint(1, 999)}.{digits(2)}",
                     f"USD {R.randint(1, 999)},{digits(3)},{digits(3)}.00",
                     f"₹{R.randint(1, 9)},{digits(2)},{digits(3)}", f"{R.randint(100, 99999)}元"])


def isbn() -> str:
    body = R.choice(["978", "979"]) + R.choice(["0", "1", "3", "7"]) + digits(8)
    check = str((10 - sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(body)) % 10) % 10)
    n = body + check
    return R.choice([f"{n[:3]}-{n[3]}-{n[4:7]}-{n[7:12]}-{n[12]}", n,
                     f"{n[:3]}-{n[3]}-{n[4:8]}-{n[8:12]}-{n[12]}"])


def tracking() -> str:
    return R.choice([f"1Z{R.randint(100, 999)}{R.choice('AEXW')}{R.choice('AEXW')}{digits(10)}",
                     f"9400 1{digits(3)} {digits(4)} {digits(4)} {digits(4)} {digits(2)}",
                     f"SF{digits(12)}", f"YT{digits(16)}", f"{digits(4)} {digits(4)} {digits(4)}",
                     f"JD{digits(13)}", f"LX{digits(9)}CN", f"{digits(12)}"])


def number() -> str:
    return R.choice([f"{R.randint(1, 999)},{digits(3)},{digits(3)}",
                     f"{R.randint(1, 99)}.{digits(5)}",
                     f"{R.randint(1, 9)} {digits(3)} {digits(3)}",
                     f"{R.randint(10, 89)}.{digits(4)}, "
                     f"{R.randint(100, 179)}.{digits(4)}", f"{digits(5)}", f"{R.randint(1, 60)}%"])


PII = {"EMAIL": email, "PHONE": phone, "PHONE_CN": phone_cn, "IPV4": ipv4, "IPV6": ipv6,
       "CARD": card, "IBAN": iban, "CN_ID": cn_id, "PASSPORT": passport}
TYPE_OF = {"PHONE_CN": "PHONE", "IPV4": "IP", "IPV6": "IP", "CN_ID": "ID"}
NEG = {"DATE": date, "DATE_ZH": date_zh, "TIME": time_, "ORDER": order, "VERSION": version,
       "PRICE": price, "ISBN": isbn, "TRACKING": tracking, "NUMBER": number,
       "CARD_BAD": card_bad, "IBAN_BAD": iban_bad, "CN_ID_BAD": cn_id_bad}

# ----------------------------------------------------------------- sentence templates
# Written by hand; {SLOT} is filled by the generator of that name (PII or hard negative).
EN = [
    "Please contact {EMAIL} before {DATE} about invoice {ORDER}.",
    "Call me on {PHONE} after {TIME}, or email {EMAIL}.",
    "Phone: {PHONE}",
    "Her mobile number is {PHONE}; the office line is {PHONE}.",
    "The server at {IPV4} runs version {VERSION} and answers on port 8443.",
    "Login from {IPV6} was blocked at {TIME} on {DATE}.",
    "Card number {CARD}, expiry 08/27, amount {PRICE}.",
    "Refund {PRICE} to the card ending in {CARD}; order {ORDER} was cancelled.",
    "Wire the deposit to IBAN {IBAN} (reference {ORDER}) by {DATE}.",
    "Payee: ACME GmbH, IBAN: {IBAN}, BIC: DEUTDEFF",
    "Passport number {PASSPORT}, issued {DATE}, expires {DATE}.",
    "The traveller's passport no. is {PASSPORT} and her phone is {PHONE}.",
    "Tracking number {TRACKING} - shipped {DATE}, delivered by {TIME}.",
    "ISBN {ISBN}, list price {PRICE}, second edition {DATE}.",
    "Release {VERSION} fixes the crash reported by {EMAIL} on {DATE}.",
    "Our population grew to {NUMBER} and revenue to {PRICE} in 2023.",
    "The test card {CARD_BAD} was declined; use {CARD} instead.",
    "That IBAN ({IBAN_BAD}) has a typo, the right one is {IBAN}.",
    "Order {ORDER} from {IPV4} paid with {CARD}.",
    "Reach the help desk at {PHONE} or {EMAIL}, Monday to Friday {TIME}-17:00.",
    "Ping {IPV4} and {IPV6}; if both fail, call {PHONE}.",
    "Resident ID {CN_ID} was entered for the visa application on {DATE}.",
    "The form lists ID {CN_ID_BAD}, which fails the checksum, and phone {PHONE}.",
    "Invoice {ORDER} dated {DATE}: {PRICE}, due within 30 days.",
    "Build {VERSION} was tagged at {TIME}; see ticket {ORDER}.",
    "Parcel {TRACKING} weighs 2.5 kg and costs {PRICE} to ship.",
    "Send the signed contract to {EMAIL} and a copy to {EMAIL}.",
    "Customer {EMAIL} (IP {IPV4}) changed the payout account to {IBAN}.",
    "Emergency contact: {PHONE} (home), {PHONE} (work).",
    "My card is {CARD} and my passport is {PASSPORT}.",
    "We met on {DATE} at {TIME}; the bill was {PRICE} for order {ORDER}.",
    "Coordinates {NUMBER} were logged with firmware {VERSION}.",
    "Account holder: IBAN {IBAN}; card on file {CARD}.",
    "The router's address is {IPV4}, its IPv6 prefix {IPV6}.",
    "Text {PHONE} with your order number {ORDER} for updates.",
    "Cheque {ORDER} for {PRICE} cleared on {DATE}.",
    "Passport: {PASSPORT}; nationality: Chinese; ID: {CN_ID}.",
    "See ISBN {ISBN} and tracking {TRACKING} in the attached sheet.",
    "The card {CARD_BAD} and the ID {CN_ID_BAD} are typos; nothing personal here.",
    "Visitor logs: {IPV6} at {TIME}, {IPV4} at {TIME}.",
]
ZH = [
    "请于{DATE_ZH}前联系{EMAIL}处理发票{ORDER}。",
    "我的手机号是{PHONE_CN}，有事请打给我。",
    "电话：{PHONE_CN}",
    "办公室电话{PHONE_CN}，传真{PHONE_CN}。",
    "服务器{IPV4}运行版本{VERSION}，端口8443。",
    "{DATE_ZH}{TIME}，来自{IPV6}的登录被拦截。",
    "银行卡号{CARD}，消费金额{PRICE}。",
    "退款{PRICE}将退回尾号卡{CARD}，订单号{ORDER}已取消。",
    "请将定金汇至IBAN {IBAN}，备注订单{ORDER}。",
    "收款人：ACME GmbH，IBAN：{IBAN}。",
    "护照号码{PASSPORT}，签发日期{DATE_ZH}。",
    "旅客护照号为{PASSPORT}，联系电话{PHONE}。",
    "快递单号{TRACKING}，{DATE_ZH}发货。",
    "ISBN {ISBN}，定价{PRICE}。",
    "版本{VERSION}修复了{EMAIL}在{DATE_ZH}报告的崩溃。",
    "本市人口达到{NUMBER}，营业收入{PRICE}。",
    "测试卡{CARD_BAD}被拒绝，请改用{CARD}。",
    "这个IBAN（{IBAN_BAD}）有错字，正确的是{IBAN}。",
    "订单{ORDER}来自{IPV4}，使用{CARD}支付。",
    "客服热线{PHONE_CN}，邮箱{EMAIL}，工作时间{TIME}至17:00。",
    "身份证号：{CN_ID}",
    "张三的身份证号码是{CN_ID}，手机{PHONE_CN}。",
    "表格中的身份证号{CN_ID_BAD}校验位错误。",
    "发票{ORDER}开具于{DATE_ZH}，金额{PRICE}。",
    "构建{VERSION}于{TIME}完成，工单{ORDER}。",
    "包裹{TRACKING}重2.5公斤，运费{PRICE}。",
    "请把合同发到{EMAIL}，抄送{EMAIL}。",
    "用户{EMAIL}（IP：{IPV4}）把收款账户改成了{IBAN}。",
    "紧急联系人：{PHONE_CN}（家），{PHONE_CN}（单位）。",
    "我的卡号是{CARD}，护照号是{PASSPORT}。",
    "我们{DATE_ZH}{TIME}见面，账单{PRICE}，订单{ORDER}。",
    "坐标{NUMBER}由固件{VERSION}记录。",
    "路由器地址{IPV4}，IPv6前缀{IPV6}。",
    "发送订单号{ORDER}到{PHONE_CN}查询进度。",
    "持证人身份证{CN_ID}，护照{PASSPORT}，国际电话{PHONE}。",
    "参见ISBN {ISBN}和运单{TRACKING}。",
    "卡号{CARD_BAD}和身份证{CN_ID_BAD}都是笔误，不含个人信息。",
    "访问日志：{TIME}来自{IPV6}，{TIME}来自{IPV4}。",
    "如有疑问请致电{PHONE_CN}或发邮件至{EMAIL}。",
    "开户行账号IBAN{IBAN}，信用卡{CARD}。",
]


def fill(template: str) -> tuple[str, list[dict], list[dict]]:
    """The template with each slot generated; PII spans and hard-negative spans."""
    text, spans, negatives, pos = "", [], [], 0
    for match in re.finditer(r"\{([A-Z_0-9]+)\}", template):
        text += template[pos:match.start()]
        slot = match.group(1)
        value = (PII.get(slot) or NEG[slot])()
        start, text = len(text), text + value
        if slot in PII:
            spans.append({"start": start, "end": len(text), "type": TYPE_OF.get(slot, slot),
                          "value": value})
        else:
            negatives.append({"start": start, "end": len(text), "kind": slot, "value": value})
        pos = match.end()
    return text + template[pos:], spans, negatives


def build(seed: int, repeats: int) -> list[dict]:
    """Every template `repeats` times; every other template of a language held out."""
    R.seed(seed)
    rows = []
    for lang, templates in (("en", EN), ("zh", ZH)):
        for t, template in enumerate(templates):
            for r in range(repeats):
                text, spans, negatives = fill(template)
                rows.append({"id": f"{lang}-{t:02d}-{r}", "lang": lang,
                             "split": "heldout" if t % 2 else "dev", "template": t,
                             "text": text, "spans": spans, "negatives": negatives})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "data" / "pii_eval.jsonl"))
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    rows = build(args.seed, args.repeats)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                   encoding="utf-8")
    counts: dict[str, int] = {}
    for row in rows:
        for span in row["spans"]:
            counts[span["type"]] = counts.get(span["type"], 0) + 1
    negs = sum(len(r["negatives"]) for r in rows)
    print(f"{len(rows)} sentences, {sum(counts.values())} PII spans {counts}, "
          f"{negs} hard negatives -> {out}")


if __name__ == "__main__":
    main()
