"""The small model made at first use: durable before it appears, made once when two processes ask at once."""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path

from trajforge import atomic, small_model

TEXTS = ["def add(a, b):\n    return a + b\n", "const x = require('y');\n"] * 20
TINY = {"vocab_size": 300, "hidden_size": 32, "layers": 1, "heads": 2, "kv_heads": 1}


def test_the_model_is_fsynced_before_it_appears_and_nothing_else_is_left(tmp_path, monkeypatch):
    synced: list[Path] = []
    monkeypatch.setattr(atomic, "fsync_file", lambda path: synced.append(Path(path)))
    directory = small_model.ensure_small_model(tmp_path / "small", texts=TEXTS, **TINY)
    made = {path.name for path in directory.iterdir()}
    assert {"config.json", "tokenizer.json", "model.safetensors", "trajforge_model.json"} <= made
    assert made <= {path.name for path in synced}  # every file, under its staging name, before the rename
    assert sorted(path.name for path in tmp_path.iterdir()) == [".small.lock", "small"]


def test_a_second_process_waits_for_the_first_and_uses_its_model(tmp_path, monkeypatch):
    directory = tmp_path / "small"
    returned: list[Path] = []

    def never(*args, **kwargs):
        raise AssertionError("the second process trained a tokenizer of its own")

    monkeypatch.setattr(small_model, "train_tokenizer", never)
    with open(tmp_path / ".small.lock", "a+b") as first:  # the first process, still creating the model
        fcntl.flock(first, fcntl.LOCK_EX)
        second = threading.Thread(target=lambda: returned.append(small_model.ensure_small_model(directory, texts=TEXTS, **TINY)))
        second.start()
        second.join(0.5)
        assert second.is_alive()  # waiting, not writing a model of its own
        directory.mkdir()
        for name in ("config.json", "tokenizer.json", "made-by-the-first"):
            (directory / name).write_text("{}")
    second.join(10)
    assert returned == [directory] and (directory / "made-by-the-first").is_file()
