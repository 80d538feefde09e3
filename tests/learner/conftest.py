"""Fixtures for the learner's tests: the tiny model's tokenizer and the shared Ray (`tiny_model` is in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


@pytest.fixture(scope="session")
def ray_cluster(serve_url):
    """The session's Ray (started by the shared Serve fixture); the Serve apps hold most of its 2 CPUs, the learner's workers take 0.05 each."""
    return serve_url
