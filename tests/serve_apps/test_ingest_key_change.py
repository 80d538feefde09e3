"""The ingest store started with a key that does not open the secrets its registry sealed (another
TRAJFORGE_SECRET_KEY, a key file lost and made anew) is refused at start, naming the key and what to do, instead of
answering every envelope of the sessions opened before with a 500 that clients retry for ever."""

from __future__ import annotations

import base64
import os

import pytest
from test_ingest_recovery import _open, _settings

from serve_apps.ingest.store import EnvelopeStore

ENV = "TRAJFORGE_SECRET_KEY"


def test_another_secret_key_is_refused_at_start_and_the_sealing_one_still_opens_the_sessions(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    secret = _open(EnvelopeStore(_settings(tmp_path)), "sess-before")
    monkeypatch.setenv(ENV, base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(ValueError, match=rf"the secret key \(\${ENV}\) does not open the session secrets sealed in .*ingest.db"):
        EnvelopeStore(_settings(tmp_path))
    monkeypatch.delenv(ENV)
    assert EnvelopeStore(_settings(tmp_path)).secret_of("sess-before") == secret


def test_a_lost_key_file_is_refused_without_making_a_new_one(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    settings = _settings(tmp_path)
    secret = _open(EnvelopeStore(settings), "sess-before")
    original = settings.key_file.read_bytes()
    settings.key_file.unlink()  # the lake moved to a machine without its key file
    with pytest.raises(ValueError, match="made at this start: there was none.*restored from a backup"):
        EnvelopeStore(settings)
    assert not settings.key_file.exists()
    settings.key_file.write_bytes(original)
    assert EnvelopeStore(settings).secret_of("sess-before") == secret


def test_a_registry_without_sessions_takes_any_key(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, base64.b64encode(os.urandom(32)).decode())
    EnvelopeStore(_settings(tmp_path))
    monkeypatch.setenv(ENV, base64.b64encode(os.urandom(32)).decode())
    store = EnvelopeStore(_settings(tmp_path))
    assert store.secret_of("no-such-session") is None
