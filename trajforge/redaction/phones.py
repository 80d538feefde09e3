"""Phone numbers: a regex finds phone-shaped digit groups, `phonenumbers` decides which are numbers.

Why not `phonenumbers.PhoneNumberMatcher` over the whole text: it is pure Python, scans at about
1 MB/s, and agent text is full of digits that are not phones. The candidate regex rejects the common
look-alikes by shape first: groups glued to words, paths, versions and times (`v1.31.7`, `/v2/415`,
`12:30:45`, `:5432`), dates (`2025-06-11`), and bare digit runs (`20240311093901223400000002`, epoch
times, AWS account ids; a bare run is a phone only with a leading `+`, as in E.164).

- `+<country code> ...`: a phone if it has a possible length for that country. Not "valid": the
  library's validity metadata lags new allocations, and a `+` before grouped digits is rarely
  anything else.
- National formats (`(415) 555-0132`, `020 7946 0958`, `030 901820`): at least 9 digits, valid in
  one of the configured regions AND grouped the way that country writes numbers (the matcher's
  STRICT_GROUPING leniency, run on the candidate alone). Validity alone is weak: `25196 37544`,
  `92.55467075` and `2018-06-01 00` are valid US numbers. A region whose national numbers start
  with a trunk prefix (the 0 of GB and DE) is only asked about candidates that start with it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from trajforge.redaction.rule import Rule, Span, compile_digit_pattern

# The pattern starts with a plain character class and looks behind it afterwards (a leading
# assertion would stop the engine from skipping to candidate characters: 2.5x slower). Then one
# branch per first character: +country code, (area code), or a digit group. A candidate may not
# sit inside a run of numbers (`(?<!\d .)`, `(?! \d)`): tables and matrices are not phone books,
# and without this a page of them costs a library call per number.
_CANDIDATE = compile_digit_pattern(
    r"""(?x)[+(\d](?<![\w.#/+\])-].)(?<!\d:.)(?<!\d\ .)(?:
        (?<=\+)\d{1,3}(?:[ .-]?\(\d{1,5}\)[ .-]?|[ .-]?)\d{1,8}(?:[ .-]\d{1,8}){0,5}    # +1 (415) 555-0173, +44 20 7946 0958, +14155550132
      | (?<=\()\d{2,5}\)[ .-]?\d{2,8}(?:[ .-]\d{2,8}){0,4}                             # (415) 555-0132
      | (?<=\d)(?:(?<=1)[ .-]\d{2,5}|\d{1,4})(?:[ .-]\d{2,8}){1,4}                      # 415-555-0132, 1-800-555-0199, 030 901820
    )(?![\w]|[.:/-]\w|\ \d)"""
)
_DATE = re.compile(r"\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{2,4}")
_DIGIT = re.compile(r"\d")
_GROUPS = re.compile(r"\d+")
_SEPARATORS = re.compile(r"[ .-]")


@functools.cache
def _trunk_prefix(region: str) -> str:
    """The digit(s) a national number starts with in `region` ("0" in GB and DE); "" where it is optional (US)."""
    import phonenumbers

    prefix = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix or ""
    return "" if prefix == "1" else prefix


class PhoneRule(Rule):
    kind = "phone"

    def __init__(self, regions: list[str] | tuple[str, ...] = ("US", "GB", "DE")):
        self.regions = tuple(regions)

    def spans(self, text: str, lowered: str) -> Iterator[Span]:
        for match in _CANDIDATE.finditer(text):
            candidate = match.group()
            digits = "".join(_DIGIT.findall(candidate))
            if 7 <= len(digits) <= 15 and not _DATE.match(candidate.lstrip("+")) and _is_number(candidate, digits, self.regions):
                yield match.span()


@functools.lru_cache(maxsize=4096)  # logs repeat the same numbers, and the library is the slow part
def _is_number(candidate: str, digits: str, regions: tuple[str, ...]) -> bool:
    if candidate.startswith("+"):  # `+16777216` in code is arithmetic; a compact E.164 number is longer
        return (len(digits) >= 10 or not candidate[1:].isdigit()) and _possible_number(candidate)
    groups = _GROUPS.findall(candidate)
    if len(digits) < 9 or max(map(len, groups)) < 3 or len(groups) < 3 and "." in candidate:
        return False  # too short to hold an area code; 05 10 15 20: a row of numbers; 309.6171875: a decimal
    if "." in candidate and not candidate.startswith("(") and len(set(_SEPARATORS.findall(candidate))) > 1:
        return False  # 1.239 841 9739, 206.766 9877: a decimal written in digit groups (a constant), not a phone
    return any(_grouped_number(candidate, region) for region in regions if digits.startswith(_trunk_prefix(region)))


def _grouped_number(candidate: str, region: str) -> bool:
    """A valid number of `region`, written with that country's digit groups (Leniency.STRICT_GROUPING)."""
    import phonenumbers

    matches = phonenumbers.PhoneNumberMatcher(candidate, region, leniency=phonenumbers.Leniency.STRICT_GROUPING)
    return any(match.start == 0 and match.end == len(candidate) for match in matches)


def _possible_number(candidate: str) -> bool:
    """`+44 7700 900123`: the right length for its country, though not in the validity metadata."""
    import phonenumbers

    try:
        return phonenumbers.is_possible_number(phonenumbers.parse(candidate, None))
    except phonenumbers.NumberParseException:
        return False
