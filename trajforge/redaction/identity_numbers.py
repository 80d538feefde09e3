"""Payment card numbers (credit_card) and US Social Security numbers (ssn): PII with a checkable shape.

credit_card: 13-19 digits that pass the Luhn check and start like a card of their length (Visa, Mastercard,
American Express, Discover, JCB, Diners, UnionPay). Written in groups (`4111 1111 1111 1111`,
`3782-822463-10005`) they are taken anywhere; as one run of digits only after a card word (`card`, `cc`,
`visa`, `pan`, `payment`, ...): random seeds, big integers and IDs in code pass Luhn one time in ten
(`default_rng(2435908729190400)` does), and damaging code costs more than the rare bare card number.
The well-known test numbers (4242 4242 4242 4242, 4111 1111 1111 1111) are replaced too: nothing tells
a test number from a customer's in a log, and a card number teaches a model nothing.

ssn: `AAA-GG-SSSS` with a possible area (not 000, 666 or 9xx), group (not 00) and serial (not 0000);
nine digits without dashes, or with blanks, only after `SSN` or `social security`. A dashed 3-2-4 run is
rarely anything else in agent text (not a date, a phone, a version or a port).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from trajforge.redaction.rule import Rule, Span, compile_digit_pattern

_EDGE_BEFORE = r"(?<![\w.,+/:-].)"  # after a pattern's first character: a leading assertion slows the scan (rule.py)
_EDGE_AFTER = r"(?![\w]|[.,/:-]\d)"
# Every card number starts with 2-6. One scan finds both shapes: digit patterns cost a scan each (~170 MB/s).
_CARD = compile_digit_pattern(
    r"[2-6]" + _EDGE_BEFORE + r"(?:"
    r"\d{3}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{4}(?:(?P=sep)\d{3})?"   # 4-4-4-4(-3)
    r"|\d{3}(?P<sep2>[ -])\d{6}(?P=sep2)\d{4,5}"                              # Amex 4-6-5, Diners 4-6-4
    r"|(?P<run>\d{12,18})"                                                      # one run: only after a card word
    r")" + _EDGE_AFTER
)
# A card word earlier on the line: `card number 4012...`, `(card_number, amount) VALUES (8812, '3714...'`.
_CARD_WORD = re.compile(r"(?i)(?:card|\bcc|credit|debit|visa|master|amex|discover|\bpan\b|payment)[^\n]{0,60}$")
# From its first dash (a literal the engine skips to fast; a digit is everywhere), the area looked behind.
_SSN = compile_digit_pattern(r"-(?<=(?<![\w.,+/:-])\d{3}-)\d\d-\d{4}" + _EDGE_AFTER)
_SSN_WORDS = compile_digit_pattern(r"(?i)\b(?:ssn|social[ _-]?security(?:[ _-]?(?:number|no|#))?)\b[^\n\d]{0,20}(?P<ssn>\d{3}[ -]?\d{2}[ -]?\d{4})" + _EDGE_AFTER)


def luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def card_brand_fits(digits: str) -> bool:
    """Does the number start like a card of its length (issuer identification number ranges)?"""
    length, two, four, six = len(digits), int(digits[:2]), int(digits[:4]), int(digits[:6])
    return (
        digits[0] == "4" and length in (13, 16, 19)                                     # Visa
        or (51 <= two <= 55 or 2221 <= four <= 2720) and length == 16                   # Mastercard
        or two in (34, 37) and length == 15                                             # American Express
        or (four == 6011 or two == 65 or 644 <= four // 10 <= 649 or 622126 <= six <= 622925) and 16 <= length <= 19  # Discover
        or 3528 <= four <= 3589 and 16 <= length <= 19                                  # JCB
        or (300 <= four // 10 <= 305 or two in (36, 38, 39)) and 14 <= length <= 19     # Diners Club
        or two == 62 and 16 <= length <= 19                                             # UnionPay
    )


class CreditCardRule(Rule):
    kind = "credit_card"

    def spans(self, text: str, lowered: str) -> Iterator[Span]:
        for match in _CARD.finditer(text):
            if not _is_card(match.group().replace(" ", "").replace("-", "")):
                continue
            if match.group("run") and not _CARD_WORD.search(text, max(match.start() - 72, 0), match.start()):
                continue
            yield match.span()


def _is_card(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and card_brand_fits(digits) and luhn(digits)


def _possible_ssn(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


class SsnRule(Rule):
    kind = "ssn"

    def spans(self, text: str, lowered: str) -> Iterator[Span]:
        if "-" in text:
            for match in _SSN.finditer(text):
                start = match.start() - 3
                if _possible_ssn(text[start : match.start()] + match.group().replace("-", "")):
                    yield start, match.end()
        if "ssn" in lowered or "social" in lowered:
            for match in _SSN_WORDS.finditer(text):
                if _possible_ssn(re.sub(r"[ -]", "", match.group("ssn"))):
                    yield match.span("ssn")
