"""The redaction detector: quality on the labelled set, and the properties the build relies on."""

from __future__ import annotations

import copy
import json
import pickle
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from trajforge.redaction import KINDS, Redaction, Redactor, RedactionSettings
from trajforge.redaction.evaluation import load_labelled, score

REPO = Path(__file__).resolve().parents[2]
LABELLED = REPO / "tests" / "data" / "redaction_labelled.jsonl"
SESSION_04 = REPO / "examples" / "sessions" / "04_terraform_eks_nodegroup_planted_secrets.json"
# What examples/sessions/README.md says was planted in session 04 (all fake).
PLANTED = [
    "ghp_R7tXk2Lm9QvB4nWc8YdZ1pHs6JfGa3Ue0KoT",
    "AKIA4KXZ7QF3N2WD8PLM",
    "Zq8Vd3T/7mLk2Rz9XwPpA0sHfJb4NcYeUo1GiKtM",
    "hunter2",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzdmMtZGVwbG95LWJvdCIsInNjb3BlIjoicGF5bWVudHM6YWRtaW4iLCJleHAiOjE3NTAwMDAwMDB9",
    "4f9cK2mXl0VbQ8nRzT1yW6eHa3JdPsGu7oLiNcXkE5A",
    "priya.raman@acme-payments.io",
    "marcus.ode@acme-payments.io",
    "payments-support@acme-payments.io",
    "(415) 555-0173",
    "10.42.3.17",
    "10.42.5.88",
    "10.42.7.201",
    "10.42.9.54",
    "54.183.22.91",
]


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return load_labelled(LABELLED)


def _findings(redactor: Redactor):
    return lambda text: [(found.kind, text[found.start : found.end]) for found in redactor.find(text)]


def test_labelled_set_is_well_formed(rows):
    assert len(rows) >= 200
    for row in rows:
        for span in row["spans"]:
            assert span["kind"] in KINDS, span
            assert span["value"] in row["text"], span
    assert set(KINDS) <= {span["kind"] for row in rows for span in row["spans"]}, "every kind has labelled examples"


def test_precision_and_recall_on_the_labelled_set(redactor, rows):
    result = score(_findings(redactor), rows)
    print("\n" + result.table())
    for mistake in result.mistakes:
        print(*mistake)
    assert result.precision() >= 0.97
    assert result.recall() >= 0.95
    low_recall = {kind: round(result.recall(kind), 3) for kind in result.kinds() if result.recall(kind) < 0.9}
    assert not low_recall


def test_placeholders_carry_the_kind(redactor):
    text = "export GITHUB_TOKEN=ghp_R7tXk2Lm9QvB4nWc8YdZ1pHs6JfGa3Ue0KoT; mail priya.raman@acme-payments.io from 10.42.5.88"
    assert redactor.redact(text) == Redaction(
        "export GITHUB_TOKEN=[REDACTED:GITHUB_TOKEN]; mail [REDACTED:EMAIL] from [REDACTED:IP_ADDRESS]",
        {"github_token": 1, "email": 1, "ip_address": 1},
    )


def test_the_more_specific_kind_wins_an_overlap(redactor):
    jwt = PLANTED[4] + "." + PLANTED[5]
    assert redactor.redact(f"Authorization: Bearer {jwt}").counts == {"jwt": 1}
    assert redactor.redact("DATABASE_URL=postgres://admin:hunter2@db.internal:5432/app").text == (
        "DATABASE_URL=postgres://admin:[REDACTED:URL_PASSWORD]@db.internal:5432/app"
    )


def test_redacting_twice_changes_nothing(redactor, rows):
    for row in rows:
        once = redactor.redact(row["text"]).text
        assert redactor.redact(once) == Redaction(once, {}), row["text"][:80]


def test_redact_tree_copies_and_counts(redactor):
    tree = {
        "step": 4,
        "content": "token ghp_R7tXk2Lm9QvB4nWc8YdZ1pHs6JfGa3Ue0KoT",
        "arguments": {"command": "ssh deploy@10.42.9.54", "env": ["DB_PASSWORD=hunter2", None, 1.5]},
        "priya.raman@acme-payments.io": ("kept as a key", "call +1 (415) 555-0173"),
    }
    original = copy.deepcopy(tree)
    clean, counts = redactor.redact_tree(tree)
    assert tree == original
    assert counts == Counter({"github_token": 1, "ip_address": 1, "env_secret": 1, "phone": 1})
    assert clean == {
        "step": 4,
        "content": "token [REDACTED:GITHUB_TOKEN]",
        "arguments": {"command": "ssh deploy@[REDACTED:IP_ADDRESS]", "env": ["DB_PASSWORD=[REDACTED:ENV_SECRET]", None, 1.5]},
        "priya.raman@acme-payments.io": ("kept as a key", "call [REDACTED:PHONE]"),
    }


def test_every_planted_value_of_session_04_disappears(redactor):
    session = json.loads(SESSION_04.read_text())
    clean, counts = redactor.redact_tree(session)
    dumped = json.dumps(clean, ensure_ascii=False)
    assert [value for value in PLANTED if value in dumped] == []
    assert "ip-[REDACTED:IP_ADDRESS].us-west-1.compute.internal" in dumped, "EC2 host names spell the address too"
    assert {"github_token", "aws_access_key", "aws_secret_key", "url_password", "jwt", "email", "phone", "ip_address"} <= set(counts)
    assert "b81c0e4" in dumped and "1d7e5b2" in dumped, "commit SHAs are kept"


def test_settings_choose_kinds_placeholder_and_allowlist():
    text = "mail priya.raman@acme-payments.io or ops@example.com from 127.0.0.1 and 10.42.5.88"
    settings = RedactionSettings(kinds=["EMAIL"], placeholder="<{kind}>", allowlist=["ops@example.com"])
    assert Redactor(settings).redact(text).text == "mail <EMAIL> or ops@example.com from 127.0.0.1 and 10.42.5.88"
    assert Redactor(RedactionSettings(keep_loopback_ips=False)).redact(text).counts == {"email": 2, "ip_address": 2}


def test_unknown_kind_is_an_error_naming_the_field():
    with pytest.raises(ValidationError) as error:
        RedactionSettings.model_validate({"kinds": ["email", "passport_number"]})
    assert "kinds" in str(error.value)
    with pytest.raises(ValidationError, match="extra"):
        RedactionSettings.model_validate({"kind": ["email"]})
    with pytest.raises(ValidationError, match="placeholder"):
        RedactionSettings(placeholder="[{type}]")


def test_pickles_for_ray_tasks(redactor):
    settings = RedactionSettings(kinds=["email", "phone"], allowlist=["a@b.io"])
    copied = pickle.loads(pickle.dumps(Redactor(settings)))
    assert copied.settings == settings
    assert copied.redact("write to priya.raman@acme-payments.io") == Redaction("write to [REDACTED:EMAIL]", {"email": 1})
    assert pickle.loads(pickle.dumps(redactor)).redact("x 10.42.5.88").counts == {"ip_address": 1}


@pytest.mark.parametrize(
    "text",
    [
        "commit 5d41402abc4b2a76b9719d911017c592aa1c3e4f (HEAD -> main, origin/main)",
        "sha512-" + "Qm9vYmFyYmF6cXV4" * 5 + "== version 1.2.3.4, 2025-06-12T10:17:33Z, took 3m7s, port :5432",
        "tests/test_api.py:142: AssertionError; uuid 3f2a9c1e-77b4-4d1a-9e0c-5b6d7e8f9a01; color #3b82f6",
        "password = getpass(); token = os.environ['API_TOKEN']; tokenizer.pad_token = tokenizer.eos_token",
        "git clone git@github.com:acme/api.git; npm i react@18.3.1; listen 0.0.0.0:8000 and [::1]:8000",
        "TOKEN=$(curl -X PUT http://169.254.169.254/latest/api/token); curl http://[fd00:ec2::254]/latest/meta-data/iam/",
        "CODATA constants in digit groups: 'electron mass energy equivalent in MeV': 1.239 841 9739 e-06, proton 938.272 0813 MeV",
    ],
)
def test_hard_negatives_are_left_alone(redactor, text):
    assert redactor.redact(text) == Redaction(text, {})


@pytest.mark.parametrize(
    "text, secret, kind",
    [
        ("curl -H 'Authorization: Bearer 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' https://api.sendgrid.com/v3/mail/send",
         "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", "sendgrid_key"),
        ("conn = 'DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
         "K1SZFPTOtr/KBHBeksoGMGw==;EndpointSuffix=core.windows.net'",
         "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==", "env_secret"),
        ("storage_account_key = \"9fKx2LmQ7vRt4WzN8pBc3Dh6Jy1Ga5Ue0KoT\"", "9fKx2LmQ7vRt4WzN8pBc3Dh6Jy1Ga5Ue0KoT", "env_secret"),
    ],
)
def test_sendgrid_keys_and_azure_account_keys_are_replaced(redactor, text, secret, kind):
    result = redactor.redact(text)
    assert secret not in result.text and result.counts == {kind: 1}
    assert "AccountName=acme;" in result.text or "AccountName" not in text, "the rest of a connection string stays"
