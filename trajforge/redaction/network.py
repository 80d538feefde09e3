"""Email and IP addresses: PII whose shape is shared with a lot of things that are not PII.

Email: found from its `@domain.tld` (a literal `@` makes the scan cheap), then the local part is
read backwards. Not emails: scp-style git remotes (`git@github.com:org/repo`), URL user-info
(`https://key@o1.ingest.sentry.io`: the url_password rule owns URLs), `icon@2x.png`, hosts on
pseudo-TLDs (`ubuntu@ip-10-0-0-5.ec2.internal`), npm and Go versions (`react@18.2.0`: no letter TLD).

IP: IPv4 and IPv6, validated by `ipaddress`, and the dashed IPv4 in EC2 host names (`ip-10-42-3-17`).
Kept: loopback, unspecified and netmask addresses when `keep_loopback_ips` (they name no host), and so the
cloud instance metadata service's (`169.254.169.254`, `fd00:ec2::254`: the same on every VM); CIDR
networks (`10.0.0.0/16` is a subnet, `10.1.2.3/32` a host and redacted); versions and section numbers
(`version 1.2.3.4`, `==1.2.3.4`, `Chrome/120.0.0.0`, `pkg-1.2.3.4`, `section 8.4.1.3`, OIDs, 0.0.0.0/8,
and quads whose first three parts are single digits: `7.4.3.3`, `3.1.1.6`, `6.0.0.0` are far more often
numbers than hosts, and the real ones, 1.1.1.1 and 8.8.8.8, are public resolvers); numbers in a run of
numbers (SVG path data: `.648 1.97.48.48 0 0 1`); Python slices (`x[100::200]`) and decimal-only
colon runs that do not start like an address (`38:2::255:0:0`). Private addresses are redacted: an
internal address map is still a description of someone's network.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from trajforge.redaction.rule import Rule, Span, compile_digit_pattern

METADATA_SERVICE = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_DOMAIN = re.compile(r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?P<tld>[A-Za-z]{2,24})(?![\w-]|\.\w)")
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_NOT_TLDS = frozenset(
    """local localhost localdomain internal lan intranet corp home svc cluster invalid test
    png jpg jpeg gif svg webp ico bmp js mjs cjs ts tsx jsx css scss json yaml yml toml lock md txt html
    py go rs rb java kt swift tgz gz zip whl jar""".split()
)


class EmailRule(Rule):
    kind = "email"

    needles = ("@",)

    def spans(self, text: str, lowered: str) -> Iterator[Span]:
        for match in _DOMAIN.finditer(text):
            start = at = match.start()
            while start > 0 and text[start - 1] in _LOCAL_CHARS and at - start < 64:
                start -= 1
            while start < at and not text[start].isalnum():
                start += 1
            if start == at or match.group("tld").lower() in _NOT_TLDS:
                continue
            if re.match(r":[\w~/]", text[match.end() : match.end() + 2]):
                continue  # git@github.com:org/repo.git
            token_start = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start), text.rfind('"', 0, start), start - 200)
            if "://" in text[token_start + 1 : start]:
                continue  # scheme://user@host: URL user-info, not a mailbox
            yield start, match.end()


# Both patterns start with a plain character class and check what precedes it afterwards (a
# lookbehind over that first character): a leading assertion would stop the regex engine from
# skipping ahead to candidate characters, which makes the scan three times slower.
_IPV4 = compile_digit_pattern(r"(?P<address>\d(?<![\w.]\d)(?<!\w-\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3})(?![\w]|\.\d)(?:/(?P<prefix>\d{1,2})(?!\d))?")
_IPV6 = compile_digit_pattern(r"(?P<address>[0-9A-Fa-f:](?<![\w:.].)[0-9A-Fa-f]{0,3}:[0-9A-Fa-f:]{2,40}(?:\.\d{1,3}){0,3})(?![\w:]|\.\d)(?:/(?P<prefix>\d{1,3})(?!\d))?")
# EC2 and GKE host names spell the node's address with dashes: ip-10-42-3-17.us-west-1.compute.internal.
_DASHED_IPV4 = re.compile(r"(?<![\w-])ip-(?P<address>\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3})(?![\w-])")
_VERSION_BEFORE = re.compile(
    r"(?i)(?:version\w*|\bver|\bv|\brelease|\bbuild|\bsection|§|\boid|objectidentifier\(|[=<>~!]=|\^"
    r"|\b(?:chrome|chromium|firefox|safari|edge?|opr|crios|applewebkit)/)[\"' \t:=,]*$"
)
_NUMBER_BEFORE = re.compile(r"([-\d.]*\d[-\d.]*)[ ,]+$")
_NUMBER_AFTER = re.compile(r"[ ,]*(-?\.?\d[-\d.]*)")


def _is_mask(address: ipaddress.IPv4Address) -> bool:
    value = int(address)
    inverted = value ^ 0xFFFFFFFF
    return value != 0 and (inverted & (inverted + 1) == 0 or value & (value + 1) == 0)


class IpRule(Rule):
    kind = "ip_address"

    def __init__(self, keep_loopback: bool = True):
        self.keep_loopback = keep_loopback

    def spans(self, text: str, lowered: str) -> Iterator[Span]:
        if text.count(".") >= 3:
            for match in _IPV4.finditer(text):
                if not self._keep_v4(text, match):
                    yield match.span("address")
        if text.count(":") >= 2:
            for match in _IPV6.finditer(text):
                if not self._keep_v6(match):
                    yield match.span("address")
        if "ip-" in text:
            for match in _DASHED_IPV4.finditer(text):
                if not self._keep_address(match.group("address").replace("-", ".")):
                    yield match.span("address")

    def _keep_address(self, literal: str) -> bool:
        try:
            address = ipaddress.IPv4Address(literal)
        except ValueError:
            return True  # an octet over 255 or with a leading zero: not an address
        if address.packed[0] == 0 or max(address.packed[:3]) < 10:
            return True  # 0.x.x.x is never a host; 7.4.3.3, 3.1.1.6, 6.0.0.0 are sections and versions
        return self.keep_loopback and (address.is_loopback or address.is_unspecified or _is_mask(address) or address in METADATA_SERVICE)

    def _keep_v4(self, text: str, match: re.Match[str]) -> bool:
        if self._keep_address(match.group("address")):
            return True
        address = match.group("address")
        if _VERSION_BEFORE.search(text, max(match.start() - 24, 0), match.start()) or _in_number_run(text, match.start(), match.end()):
            return True
        prefix = match.group("prefix")
        return prefix is not None and int(prefix) < 32 and _is_network(f"{address}/{prefix}")

    def _keep_v6(self, match: re.Match[str]) -> bool:
        candidate = match.group("address")
        groups = [group for group in re.split(r"[:.]", candidate) if group]
        if re.search(r"[A-Fa-f]", candidate):
            plausible = len(groups) >= 3 or max(map(len, groups), default=0) >= 3
        else:  # all decimal: 2606:4700:4700::1111 yes; x[100::200], "38:2::255:0:0" (a colour) no
            plausible = len(groups) >= 3 and len(groups[0]) == 4 and not candidate.startswith(":")
        if not plausible:
            return True
        try:
            address = ipaddress.IPv6Address(candidate)
        except ValueError:
            return True
        mapped = address.ipv4_mapped
        if self.keep_loopback and (address.is_loopback or address.is_unspecified or mapped is not None and mapped.is_loopback
                                   or address in METADATA_SERVICE):
            return True
        prefix = match.group("prefix")
        return prefix is not None and int(prefix) < 128 and _is_network(f"{address}/{prefix}")


def _in_number_run(text: str, start: int, end: int) -> bool:
    """SVG path data and number lists (`.648 1.97.48.48 0 0 1`): numbers on both sides, none of them an address."""
    before = _NUMBER_BEFORE.search(text, max(start - 24, 0), start)
    after = _NUMBER_AFTER.match(text, end, end + 24)
    return bool(before and after) and before.group(1).count(".") != 3 and after.group(1).count(".") != 3


def _is_network(cidr: str) -> bool:
    try:
        ipaddress.ip_network(cidr, strict=True)
    except ValueError:
        return False
    return True
