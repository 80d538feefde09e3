"""The ingest service's sealing key file: made whole or not at all, shared by replicas starting together, and a
damaged one refused with what to do."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from trajforge.crypto import SecretBox


def _pseudonym(key_file: str) -> str:
    return SecretBox.from_env_or_file("TRAJFORGE_TEST_UNSET_KEY", key_file).keyed_hash("203.0.113.7")


def test_a_start_killed_while_making_the_key_leaves_no_key_file(tmp_path, monkeypatch):
    key_file = tmp_path / "keys" / "ingest.key"

    def killed(_size):
        raise KeyboardInterrupt  # stands for the process dying between creating the file and writing the key

    monkeypatch.setattr(os, "urandom", killed)
    with pytest.raises(KeyboardInterrupt):
        SecretBox.from_env_or_file("TRAJFORGE_TEST_UNSET_KEY", key_file)
    assert list(key_file.parent.iterdir()) == []  # no empty key file that would stop every later start
    monkeypatch.undo()
    box = SecretBox.from_env_or_file("TRAJFORGE_TEST_UNSET_KEY", key_file)
    assert box.open(box.seal("s3cret")) == "s3cret" and (key_file.stat().st_mode & 0o777) == 0o600


def test_replicas_starting_together_share_one_key(tmp_path):
    key_file = str(tmp_path / "ingest.key")
    with ProcessPoolExecutor(4) as pool:
        pseudonyms = set(pool.map(_pseudonym, [key_file] * 8))
    assert len(pseudonyms) == 1 and pseudonyms == {_pseudonym(key_file)}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ingest.key"]


@pytest.mark.parametrize("content", [b"", b"not base64!", b"c2hvcnQ="])
def test_a_damaged_key_file_is_refused_with_what_to_do(tmp_path, content):
    key_file = tmp_path / "ingest.key"
    key_file.write_bytes(content)
    with pytest.raises(ValueError, match="is damaged .*delete it and a new key is made; else restore it from a backup"):
        SecretBox.from_env_or_file("TRAJFORGE_TEST_UNSET_KEY", key_file)
    assert key_file.read_bytes() == content
