"""The CLI's log handler follows sys.stderr, so in-process callers that swap it never hit a closed stream."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from trajforge.logs import setup_logging


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_records_go_to_the_current_stderr_after_the_one_at_setup_is_closed(monkeypatch, restore_root_logging):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging("INFO", as_json=True)
    logging.getLogger("trajforge.test").info("first record")
    first_text = first.getvalue()
    first.close()

    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    monkeypatch.setattr(logging, "raiseExceptions", True)
    logging.getLogger("trajforge.test").info("second record")

    assert '"msg": "first record"' in first_text
    assert '"msg": "second record"' in second.getvalue() and "Logging error" not in second.getvalue()
