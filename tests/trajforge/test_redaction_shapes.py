"""Redaction of the shapes an audit found missed or mistaken (each case failed before its fix), and the look-alikes
that must survive them: passphrases, Twilio, PyPI, command-line passwords, payment cards, SSNs, more provider
shapes, connection strings, netrc and XML; and the rules version that makes the next build redact again."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trajforge.redaction import Redaction, Redactor, RedactionSettings
from trajforge.redaction.identity_numbers import card_brand_fits, luhn
from trajforge.redaction.settings import RULES_VERSION

SID = "AC1f2e3d4c5b6a79880f1e2d3c4b5a6978"
AUTH = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


def _replaced(redactor: Redactor, text: str, secret: str, kind: str) -> str:
    result = redactor.redact(text)
    assert secret not in result.text, result.text
    assert result.counts == {kind: 1}, result
    return result.text


@pytest.mark.parametrize(
    "text, secret, kept",
    [
        ('password = "correct horse battery"', "correct horse battery", 'password = "'),
        ("PASSWORD='my pass'", "my pass", "PASSWORD='"),
        ('DB_PASSWORD="p@ss w0rd!"', "p@ss w0rd!", 'DB_PASSWORD="'),
        ('"PASSWORD": "correct horse battery staple", "HOST": "db"', "correct horse battery staple", '"HOST": "db"'),
        ('password: "correct-horse-battery-staple"', "correct-horse-battery-staple", "password: "),
        ("Server=tcp:acme.database.windows.net;Database=app;User ID=sa;Password=Sql$erver2022;", "Sql$erver2022", "User ID=sa;Password="),
        ("Driver={ODBC Driver 18};Server=db;UID=sa;PWD=0dbcPw!x;", "0dbcPw!x", "UID=sa;PWD="),
        ("machine api.heroku.com\n  login ops\n  password 4f9cK2mXl0VbQ8nRzT1yW6eHa3", "4f9cK2mXl0VbQ8nRzT1yW6eHa3", "login ops"),
        ("<server><id>nexus</id><username>deploy</username><password>Nx9kLm2Qv7</password></server>", "Nx9kLm2Qv7", "<username>deploy"),
        ('<add key="ApiKey" value="4f9cK2mXl0VbQ8nRzT1yW6eHa3JdPs" />', "4f9cK2mXl0VbQ8nRzT1yW6eHa3JdPs", 'key="ApiKey"'),
    ],
)
def test_passphrases_connection_strings_netrc_and_xml_are_env_secrets(redactor, text, secret, kept):
    assert kept in _replaced(redactor, text, secret, "env_secret")


@pytest.mark.parametrize(
    "text, secrets",
    [
        (f"TWILIO_ACCOUNT_SID={SID}\nTWILIO_AUTH_TOKEN={AUTH}", [SID, AUTH]),
        (f'client = Client("{SID}", "{AUTH}")', [SID, AUTH]),
        (f"twilio:\n  account_sid: {SID}\n  auth_token: {AUTH}", [SID, AUTH]),
        ("twilio api key SK0a1b2c3d4e5f60718293a4b5c6d7e8f9 created", ["SK0a1b2c3d4e5f60718293a4b5c6d7e8f9"]),
    ],
)
def test_twilio_sids_api_keys_and_auth_tokens(redactor, text, secrets):
    result = redactor.redact(text)
    assert [secret for secret in secrets if secret in result.text] == []
    assert result.counts == {"twilio_key": len(secrets)}


@pytest.mark.parametrize(
    "text, secret, kept",
    [
        ("mysql -u root -pS3cr3tPw db", "S3cr3tPw", "mysql -u root -p"),
        ("mysql -uroot -phunter2 -h db.internal", "hunter2", "-h db.internal"),
        ("mysql -u root -p'my secret' app", "my secret", "-p'"),
        ("/usr/bin/mysqldump -uroot -pR00tpw shop > x.sql", "R00tpw", "shop > x.sql"),
        ("sshpass -p Ssh9ass ssh root@host", "Ssh9ass", "ssh root@host"),
        ("redis-cli -h cache.acme.io -a p4ssW0rdRedis ping", "p4ssW0rdRedis", "ping"),
        ("docker login -u acme -p Dk2Lm9QvB4nW registry.acme.io", "Dk2Lm9QvB4nW", "registry.acme.io"),
        ("sqlcmd -S localhost -U sa -P 'YourStrong!Passw0rd' -Q 'SELECT 1'", "YourStrong!Passw0rd", "-U sa"),
        ("openssl pkcs12 -export -in c.pem -passout pass:Exp0rtPw -out c.p12", "Exp0rtPw", "-out c.p12"),
    ],
)
def test_passwords_on_command_lines(redactor, text, secret, kept):
    assert kept in _replaced(redactor, text, secret, "cli_password")


@pytest.mark.parametrize(
    "text, secret, kind",
    [
        ("SLACK_APP_TOKEN=xapp-1-A0123456789-1234567890123-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
         "xapp-1-A0123456789-1234567890123-0f1e2d3c4b5a69788796a5b4c3d2e1f0", "slack_token"),
        ("client secret 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 in the log", "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", "google_api_key"),
        ("$ gcloud auth print-access-token\nya29.a0AfB_byC7xKp2Lm9QvB4nWc8YdZ1pHs6JfGa3Ue0KoTq5RtWz8Xc4Vb6Nm2Ld9",
         "ya29.a0AfB_byC7xKp2Lm9QvB4nWc8YdZ1pHs6JfGa3Ue0KoTq5RtWz8Xc4Vb6Nm2Ld9", "google_api_key"),
        ("twine upload -u __token__ -p pypi-AgEIcHlwaS5vcmcCJDk4ZjM2YzE0LWE3ZGEtNGQ5Ni04NmY3LTVhZjE4ZTBjZGU1MwACKlszLCJlZjdh dist/*",
         "pypi-AgEIcHlwaS5vcmcCJDk4ZjM2YzE0LWE3ZGEtNGQ5Ni04NmY3LTVhZjE4ZTBjZGU1MwACKlszLCJlZjdh", "pypi_token"),
        ("https://acme.blob.core.windows.net/c/f.txt?sv=2022-11-02&ss=b&sp=r&se=2025-01-01T00:00:00Z&sig=AbCdEf0123456789%2BAbCdEf0123456789AbCdEf0%3D",
         "AbCdEf0123456789%2BAbCdEf0123456789AbCdEf0%3D", "url_password"),
        ("$ echo $TRAJFORGE_TOKEN\nsk_D9G5cvwmvZYbghFGKn9z_gOSywbtgJlT1ZFXcBsdfAg\n", "sk_D9G5cvwmvZYbghFGKn9z_gOSywbtgJlT1ZFXcBsdfAg",
         "bearer_token"),  # the provenance API's own token (seed 003), bare
    ],
)
def test_more_provider_shapes(redactor, text, secret, kind):
    _replaced(redactor, text, secret, kind)


@pytest.mark.parametrize(
    "text, number, kind",
    [
        ("card 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111", "credit_card"),
        ('"card_number": "4242424242424242"', "4242424242424242", "credit_card"),
        ("cc 5500-0000-0000-0004", "5500-0000-0000-0004", "credit_card"),
        ("amex 378282246310005", "378282246310005", "credit_card"),
        ("SSN: 123-45-6789", "123-45-6789", "ssn"),
        ('ssn = "078-05-1120"', "078-05-1120", "ssn"),  # was counted as a phone
        ("Social Security Number: 078 05 1120", "078 05 1120", "ssn"),
    ],
)
def test_payment_cards_and_ssns(redactor, text, number, kind):
    _replaced(redactor, text, number, kind)


def test_card_checks():
    assert luhn("4111111111111111") and not luhn("4111111111111112")
    assert card_brand_fits("378282246310005") and not card_brand_fits("378282246310005"[:14])
    assert not card_brand_fits("1234567890123452")  # no issuer starts with 1


@pytest.mark.parametrize(
    "text",
    [
        "gcc -I/usr/include/mysql -pthread -o app app.c",
        'mysql -u root -p -e "SHOW DATABASES"',
        "mysql -u root -p mydb < dump.sql",
        'mysql -u$DB_USER -p"$MYSQL_ROOT_PASSWORD" app; sshpass -p "$SSHPASS" ssh host; redis-cli -a $REDIS_PASSWORD ping',
        'docker login -u "$USER" -p "$TOKEN" ghcr.io; docker run -p 8080:80 nginx; ps -p 1234; python -m pytest -p no:cacheprovider',
        "pg_dump -h db -U app -p 5432 app > dump.sql; mongosh -u admin -p --authenticationDatabase admin",
        '{"password": "This field may not be blank."}, "password": "Mot de passe", {"password": "Invalid password"}',
        'password = "Enter your password"; password: "Passwords do not match"; password = "password"',
        "rng = np.random.default_rng(2435908729190400); seed = 4111111111111112; id = 4532015112830366",
        "hash ac1f2e3d4c5b6a79880f1e2d3c4b5a69 and ACCEPT 0a1b2c3d4e5f60718293a4b5c6d7e8f9; md5 d41d8cd98f00b204e9800998ecf8427e",
        "ISBN 978-3-16-148410-0, order 123-456-7890, version 1.123-45-6789, area 900-12-3456",
        "<tokenizer>bpe_model</tokenizer><max_tokens>1024</max_tokens><password>${env.NEXUS_PASSWORD}</password>",
        '<add key="PageSize" value="25" />',
        "from sk_learn_compat import sk_learn_pipeline_model_selection_gridsearchcv",
    ],
)
def test_look_alikes_of_the_new_shapes_are_left_alone(redactor, text):
    assert redactor.redact(text) == Redaction(text, {})


@pytest.mark.parametrize(
    "text",
    [
        '"password": "Contraseña", "password": "Пароль"',  # a translation in a locale file (was redacted: not ASCII)
        'password = "same as before"; password = "see above"',  # prose, not a passphrase
    ],
)
def test_labels_and_prose_in_password_fields_are_left_alone(redactor, text):
    assert redactor.redact(text) == Redaction(text, {})


def test_rules_version_is_in_the_dump_so_the_build_redacts_again():
    settings = RedactionSettings()
    dumped = settings.model_dump(mode="json")
    assert dumped["rules_version"] == RULES_VERSION >= 2
    assert RedactionSettings.model_validate_json(settings.model_dump_json()) == settings  # the build ships it as JSON
    with pytest.raises(ValidationError, match="rules_version is the redaction code's"):
        RedactionSettings.model_validate({**dumped, "rules_version": RULES_VERSION - 1})


def test_the_build_config_hash_follows_the_rules_version(monkeypatch):
    from pipelines.build.settings import load_build_settings
    from trajforge.redaction import settings as redaction_settings

    settings = load_build_settings(None, [])
    before = settings.content_hash()
    monkeypatch.setattr(redaction_settings, "RULES_VERSION", RULES_VERSION + 1)
    assert settings.content_hash() != before
