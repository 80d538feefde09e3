"""Redaction audited as a user of the curated tables sees it: structured values (a tool call's arguments, a telemetry
payload) are as clean as the same data written as text."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from trajforge.redaction import Redactor, RedactionSettings

DB_PASSWORD = "hunter2xyzQ"
AWS_SECRET = "zJalrXUtnFEMI/K7MDENG/bPxRfiCYzQWERTYKX9"


@pytest.fixture(scope="module")
def redactor():
    return Redactor()


def test_a_secret_named_key_in_structured_arguments_is_redacted_as_its_json_text_is(redactor):
    step = {"type": "action", "tool": "command_execution",
            "arguments": {"command": "./deploy.sh", "env": {"DB_PASSWORD": DB_PASSWORD, "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "REGION": "eu-west-1"}},
            "headers": {"X-Api-Key": "9f8e7d6c5b4a39281706f5e4d3c2b1a0", "Accept": "application/json"}}
    clean, counts = redactor.redact_tree(step)
    dumped = json.dumps(clean)
    assert DB_PASSWORD not in dumped and AWS_SECRET not in dumped and "9f8e7d6c5b4a" not in dumped
    assert redactor.redact(json.dumps(step)).counts.keys() >= {"env_secret"}  # the text form was always redacted
    assert clean["arguments"]["env"]["REGION"] == "eu-west-1" and clean["headers"]["Accept"] == "application/json"
    assert clean["arguments"]["env"]["DB_PASSWORD"] == "[REDACTED:ENV_SECRET]" and counts == Counter(env_secret=3)


def test_field_values_that_hold_no_secret_are_kept(redactor):
    tree = {"password": "changeme", "token_count": "1200", "password_field": "pw_input", "api_key_name": "OPENAI_API_KEY",
            "AWS::IAM::AccessKey": "bf29289b78d371e3", "notes": {"token": "the ID token"}, "secret": "line one\nline two",
            "already": {"password": "[REDACTED:ENV_SECRET]"}}
    assert redactor.redact_tree(tree) == (tree, Counter())


def test_a_key_whose_value_holds_a_provider_key_counts_that_kind_once(redactor):
    token = "ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R"
    assert redactor.redact_tree({"GITHUB_TOKEN": token}) == ({"GITHUB_TOKEN": "[REDACTED:GITHUB_TOKEN]"}, Counter(github_token=1))


def test_the_kinds_setting_and_the_allowlist_still_decide():
    tree = {"env": {"DB_PASSWORD": DB_PASSWORD}}
    assert Redactor(RedactionSettings(kinds=["email"])).redact_tree(tree) == (tree, Counter())
    assert Redactor(RedactionSettings(allowlist=[DB_PASSWORD])).redact_tree(tree) == (tree, Counter())
    short = {"password": "x9!Q"}  # shorter than any finding of a free text, still a field's password
    assert Redactor().redact_tree(short) == ({"password": "[REDACTED:ENV_SECRET]"}, Counter(env_secret=1))


def test_the_secret_key_typed_at_aws_configures_prompt_is_redacted(redactor):
    typed = ("$ aws configure\nAWS Access Key ID [None]: AKIAQWERTYUIOPASDF12\nAWS Secret Access Key [None]: wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQWERTYKX7\n"
             "AWS Secret Access Key [****************YKX7]: zJalrXUtnFEMI/K7MDENG/bPxRfiCYzQWERTYKX9\nDefault region name [None]: eu-west-1")
    clean = redactor.redact(typed)
    assert clean.counts == {"aws_access_key": 1, "aws_secret_key": 2}
    assert "AWS Secret Access Key [None]: [REDACTED:AWS_SECRET_KEY]\n" in clean.text and "Default region name [None]: eu-west-1" in clean.text
    commit = "AWS secret access key rotated in 3f786850e387550fdab836ed7e6dc881de23001b"  # a SHA-1 after the words is no secret
    assert redactor.redact(commit).text == commit


KEY_LINES = ["MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun", "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
             "nxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo", "kjRo=="]


def test_a_private_key_read_in_two_steps_is_redacted_in_both(redactor):
    head = "$ head -n 3 id_rsa\n-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(KEY_LINES[:2])
    tail = "$ tail -n +4 id_rsa\n" + "\n".join(KEY_LINES[2:]) + "\n-----END RSA PRIVATE KEY-----\n$ echo done"
    clean, counts = redactor.redact_tree([{"type": "observation", "content": head}, {"type": "observation", "content": tail},
                                          {"type": "observation", "content": json.dumps({"stdout": tail})}])
    assert not any(line in json.dumps(clean) for line in KEY_LINES) and counts == Counter(private_key=3)
    assert clean[1]["content"] == "$ tail -n +4 id_rsa\n[REDACTED:PRIVATE_KEY]\n$ echo done"
    assert clean[2]["content"] == '{"stdout": "$ tail -n +4 id_rsa\\n[REDACTED:PRIVATE_KEY]\\n$ echo done"}'


@pytest.mark.parametrize("text", ['if line == "-----END RSA PRIVATE KEY-----":', "kjRo==\n-----END PRIVATE KEY-----", "-----END PRIVATE KEY-----"])
def test_an_end_line_without_a_body_is_kept(redactor, text):
    assert redactor.redact(text).text == text


@pytest.mark.parametrize(("statement", "password"), [
    ("CREATE USER app WITH PASSWORD 'Pg5ecret';", "Pg5ecret"),
    ("psql -c \"ALTER USER postgres WITH ENCRYPTED PASSWORD 'n3wPass'\"", "n3wPass"),
    ("create role reporter with login password 'r0lePw';", "r0lePw"),
    ("ALTER USER postgres PASSWORD 'pgAdm1n';", "pgAdm1n"),
    ("GRANT ALL ON shop.* TO 'app'@'%' IDENTIFIED BY 'Gr4ntPw';", "Gr4ntPw"),
    ("CREATE USER 'app'@'localhost' IDENTIFIED WITH mysql_native_password BY 'N4tivePw';", "N4tivePw"),
    ("SET PASSWORD FOR 'root'@'localhost' = PASSWORD('Mys9lPw');", "Mys9lPw"),
    ("CREATE USER scott IDENTIFIED BY tiger;", "tiger"),
])
def test_a_password_an_sql_statement_sets_is_redacted(redactor, statement, password):
    clean = redactor.redact(statement)
    assert password not in clean.text and clean.counts == {"env_secret": 1}
    assert clean.text == statement.replace(password, "[REDACTED:ENV_SECRET]")


@pytest.mark.parametrize("text", ["cur.execute(\"ALTER USER app WITH PASSWORD %s\", (secret,))", "ALTER USER app WITH PASSWORD '%s'",
                                  "CREATE USER app IDENTIFIED BY :pw;", "Enter your password 'carefully'", "Load a library identified by 'name'.",
                                  "# the row identified by group_id", "ALTER ROLE app WITH PASSWORD NULL;", "user.check_password('secret')"])
def test_sql_shaped_text_without_a_password_is_kept(redactor, text):
    assert redactor.redact(text).text == text


def test_stored_registry_credentials_are_redacted(redactor):
    config = '{\n  "auths": {\n    "ghcr.io": {\n      "auth": "YWxpY2U6Z2hwX1NlY3JldFRva2VuMTIz"\n    }\n  }\n}'  # alice:ghp_SecretToken123
    assert redactor.redact(config).text == config.replace("YWxpY2U6Z2hwX1NlY3JldFRva2VuMTIz", "[REDACTED:BASIC_AUTH]")
    escaped = json.dumps({"stdout": config})  # a tool's output inside a JSON text
    assert "YWxpY2U6Z2hwX1NlY3JldFRva2VuMTIz" not in redactor.redact(escaped).text
    npmrc = "//registry.npmjs.org/:_auth=YWxpY2U6aHVudGVyMg=="  # alice:hunter2
    assert redactor.redact(npmrc).text == "//registry.npmjs.org/:_auth=[REDACTED:BASIC_AUTH]"
    for kept in ('"auth": "required"', '"auth": "dGVzdGluZ3Rlc3Rpbmc="', "oauth_token_auth=Ym9vdHN0cmFwX3Rva2Vu"):  # no `user:password` inside
        assert redactor.redact(kept).text == kept


def test_the_end_of_a_rotated_key_in_a_diff_hunk_is_redacted(redactor):
    hunk = "@@ -24,3 +24,3 @@\n-" + KEY_LINES[0] + "\n+" + KEY_LINES[1] + "\n+" + KEY_LINES[3] + "\n -----END RSA PRIVATE KEY-----\n"
    clean = redactor.redact(hunk)
    assert not any(line in clean.text for line in KEY_LINES) and clean.counts == {"private_key": 1}
    assert clean.text.startswith("@@ -24,3 +24,3 @@\n")


def test_a_quoted_path_to_a_secrets_file_is_kept_and_a_base64_secret_is_not(redactor):
    paths = {"env": {"GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/google/sa.json"}, "private_key": "./certs/server.key", "token": "/tmp/token"}
    assert redactor.redact_tree(paths) == (paths, Counter())
    assert redactor.redact(json.dumps(paths)).text == json.dumps(paths)
    secret = {"secret": "/K7MDENG/bPxRfiCYzEXAMPLEKEYabc123", "password": "/Passw0rd!"}  # base64 and passwords may start with a slash
    assert redactor.redact_tree(secret)[1] == Counter(env_secret=2)


@pytest.mark.parametrize(("command", "password"), [
    ("echo 'Sup3rS3cret' | sudo -S apt-get install -y nginx", "Sup3rS3cret"),
    ("echo Sup3rS3cret | sudo -kS systemctl restart api", "Sup3rS3cret"),
    ('echo -n "p4ss!word" | sudo -S -u postgres psql', "p4ss!word"),
    ("htpasswd -bc /etc/nginx/.htpasswd alice Adm1nPw", "Adm1nPw"),
])
def test_a_password_piped_to_sudo_or_given_to_htpasswd_is_redacted(redactor, command, password):
    assert redactor.redact(command).text == command.replace(password, "[REDACTED:CLI_PASSWORD]")


@pytest.mark.parametrize("command", ["echo $SUDO_PASSWORD | sudo -S ls", "echo hello | sudo tee /etc/motd", "echo done; sudo -S ls",
                                     "htpasswd -c .htpasswd admin", "sudo -S true"])
def test_sudo_and_htpasswd_without_a_password_are_kept(redactor, command):
    assert redactor.redact(command).text == command


@pytest.mark.parametrize(("text", "cookie"), [
    ("< Set-Cookie: sessionid=8f9a7b6c5d4e3f2a1b0c9d8e7f6a5b4c; Path=/; HttpOnly", "8f9a7b6c5d4e3f2a1b0c9d8e7f6a5b4c"),
    ("< set-cookie: PHPSESSID=9c1d2e3f4a5b6c7d8e9f0a1b2c; path=/", "9c1d2e3f4a5b6c7d8e9f0a1b2c"),
    ("Cookie: connect.sid=s%3AabcDEF123ghiJKL456.xyz; theme=dark", "s%3AabcDEF123ghiJKL456.xyz"),
    ('curl -b "laravel_session=eyJpdiI6IkRmT3pBbWx" http://localhost:8000/admin', "eyJpdiI6IkRmT3pBbWx"),
])
def test_a_session_cookie_is_redacted(redactor, text, cookie):
    assert redactor.redact(text).text == text.replace(cookie, "[REDACTED:BEARER_TOKEN]")


@pytest.mark.parametrize("text", ["Set-Cookie: theme=dark; session=1", "Set-Cookie: _ga=GA1.2.1234567890.1733616000",
                                  "the cookie sessionid=<your-session-id>", "SESSION_COOKIE_AGE=1209600", "curl -b cookies.txt -c cookies.txt http://x",
                                  "Set-Cookie: author_name=JohnSmith1234567; Path=/"])
def test_cookies_that_are_no_session_are_kept(redactor, text):
    assert redactor.redact(text).text == text


def test_a_long_line_that_names_curl_many_times_is_scanned_once(redactor):
    line = "curl" + " curl -o out" * 20000  # 240 KB on one line, no cookie: scanned in well under a second, not once per "curl"
    started = time.perf_counter()
    assert redactor.redact(line).text == line
    assert time.perf_counter() - started < 20
