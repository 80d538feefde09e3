"""Fixtures for the actors' tests: the embedded small model, created once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    from trajforge.small_model import ensure_small_model

    return ensure_small_model(tmp_path_factory.mktemp("models") / "small-qwen3")
