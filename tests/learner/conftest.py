"""Fixtures for the learner's tests: a tiny Qwen3-shaped model (made once), small builds, and the shared Ray."""

from __future__ import annotations

import pytest
from sft_builds import rows


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """The embedded model's code path with tiny sizes: a tokenizer trained on the test rows' text, random weights."""
    from trajforge.small_model import ensure_small_model

    texts = [message["content"] for row in rows(64, seed=1) for message in row["messages"]]
    return ensure_small_model(tmp_path_factory.mktemp("learner-model") / "tiny-qwen3", texts=texts, vocab_size=512,
                              hidden_size=64, layers=2, heads=4, kv_heads=2)


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


@pytest.fixture(scope="session")
def ray_cluster(serve_url):
    """The session's Ray (started by the shared Serve fixture); the Serve apps hold most of its 2 CPUs, the learner's workers take 0.05 each."""
    return serve_url
