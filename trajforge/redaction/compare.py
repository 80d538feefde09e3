"""`python -m trajforge.redaction.compare [labelled.jsonl]`: the measurements behind the package's choices.

Scores, on the labelled set, (1) our rules against Yelp's detect-secrets plugins for every kind a
plugin covers, (2) our phone rule against phonenumbers' PhoneNumberMatcher over the whole text and
against the candidate regex without the library, and prints each one's throughput on the example
sessions. detect-secrets runs the way its CLI scans a file (all plugins, default filters); its
high-entropy plugins have no kind, so they are reported apart.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from trajforge.redaction.evaluation import Detector, load_labelled, score
from trajforge.redaction.phones import _CANDIDATE
from trajforge.redaction.redactor import Redactor
from trajforge.redaction.settings import RedactionSettings

REPO = Path(__file__).resolve().parents[2]
DEFAULT_LABELLED = REPO / "tests" / "data" / "redaction_labelled.jsonl"
_DETECT_SECRETS_KINDS = {
    "GitHub Token": "github_token", "GitLab Token": "gitlab_token", "OpenAI Token": "openai_key", "Slack Token": "slack_token",
    "Stripe Access Key": "stripe_key", "NPM tokens": "npm_token", "JSON Web Token": "jwt", "Private Key": "private_key",
    "Basic Auth Credentials": "url_password", "Secret Keyword": "env_secret", "Public IP (ipv4)": "ip_address",
}
_HIGH_ENTROPY = {"Base64 High Entropy String", "Hex High Entropy String"}


def ours(settings: RedactionSettings | None = None) -> Detector:
    redactor = Redactor(settings)
    return lambda text: [(found.kind, text[found.start : found.end]) for found in redactor.find(text)]


def detect_secrets(high_entropy: bool = False, filters: bool = True) -> Detector:
    """detect-secrets' findings as (kind, value).

    `filters`: as `detect-secrets scan` finds them, each text written to a file and scanned with
    `scan_file` (all plugins, default filters). Without: every plugin's `analyze_line` on every line.
    AWS key ids and secret keys share one plugin type and are told apart by shape. With
    `high_entropy`, only its two high-entropy plugins, as kind "high_entropy".
    """
    import tempfile

    from detect_secrets.core.scan import scan_file
    from detect_secrets.settings import default_settings, get_plugins

    def kind_of(secret) -> str:
        if high_entropy:
            return "high_entropy" if secret.type in _HIGH_ENTROPY else ""
        if secret.type == "AWS Access Key":
            return "aws_access_key" if secret.secret_value[:4] in ("AKIA", "ASIA") else "aws_secret_key"
        return _DETECT_SECRETS_KINDS.get(secret.type, "")

    def secrets(text: str):
        if not filters:
            lines = enumerate(text.splitlines(), 1)
            return [secret for number, line in lines for plugin in get_plugins() for secret in plugin.analyze_line(filename="step.txt", line=line, line_number=number)]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "step.txt"
            path.write_text(text)
            return list(scan_file(str(path)))

    def detect(text: str) -> list[tuple[str, str]]:
        with default_settings():
            return [(kind, secret.secret_value) for secret in secrets(text) if (kind := kind_of(secret))]

    return detect


def phone_matcher(regions: Iterable[str] = ("US", "GB", "DE")) -> Detector:
    """PhoneNumberMatcher (leniency VALID, the default) over the whole text, once per region."""
    import phonenumbers

    def detect(text: str) -> list[tuple[str, str]]:
        spans = {(match.start, match.end) for region in regions for match in phonenumbers.PhoneNumberMatcher(text, region)}
        return [("phone", text[start:end]) for start, end in sorted(spans)]

    return detect


def phone_regex_only(text: str) -> list[tuple[str, str]]:
    """Our candidate regex with a 10-15 digit rule and no library: the hand-written alternative."""
    return [("phone", match.group()) for match in _CANDIDATE.finditer(text) if 10 <= sum(c.isdigit() for c in match.group()) <= 15]


def throughput(detector: Callable[[str], object], texts: list[str], budget_s: float = 3.0) -> float:
    """MB/s of CPU time over `texts` (stops early after `budget_s` for slow detectors)."""
    detector("warm-up: +44 20 7946 0958, (415) 555-0132, 030 901820")  # loads phone metadata once
    done, start = 0, time.process_time()
    for text in texts:
        detector(text)
        done += len(text.encode())
        if time.process_time() - start > budget_s:
            break
    return done / (time.process_time() - start) / 1e6


def session_texts() -> list[str]:
    def leaves(value, out):
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict | list):
            for item in value.values() if isinstance(value, dict) else value:
                leaves(item, out)
        return out

    return [text for path in sorted((REPO / "examples" / "sessions").glob("*.json")) for text in leaves(json.loads(path.read_text()), [])]


def main(path: str | Path = DEFAULT_LABELLED) -> None:
    rows, texts = load_labelled(path), session_texts()
    covered = sorted(set(_DETECT_SECRETS_KINDS.values()) | {"aws_access_key", "aws_secret_key"})
    contenders = (
        ("ours", ours(), False),
        ("detect-secrets scan, default filters (fragments count as found)", detect_secrets(), True),
        ("detect-secrets plugins, no filters (fragments count as found)", detect_secrets(filters=False), True),
    )
    for name, detector, partial in contenders:
        print(f"\n== {name}, kinds detect-secrets covers ({throughput(detector, texts):.2f} MB/s on the example sessions)")
        print(score(detector, rows, covered, partial=partial).table())
    for filters in (True, False):
        findings = [(value, row) for row in rows for _, value in detect_secrets(high_entropy=True, filters=filters)(row["text"])]
        hits = sum(any(value in span["value"] for span in row["spans"]) for value, row in findings)
        print(f"\ndetect-secrets high-entropy plugins ({'default filters' if filters else 'no filters'}): {len(findings)} findings,"
              f" {hits} inside a labelled secret, {len(findings) - hits} not (SHAs, digests, hashes, UUIDs, base64 blobs)")
    for name, detector in (("ours", ours()), ("PhoneNumberMatcher x3 regions", phone_matcher()), ("regex only", phone_regex_only)):
        print(f"\n== phones: {name} ({throughput(detector, texts):.2f} MB/s on the example sessions)")
        print(score(detector, rows, ["phone"]).table())


if __name__ == "__main__":
    main(*sys.argv[1:])
