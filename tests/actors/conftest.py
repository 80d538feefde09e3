"""Fixtures for the actors' tests: the embedded small model, created once per session, and the OpenAI-compatible front over it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """The embedded model's shape, its tokenizer trained on the example sessions alone: the default corpus also reads the
    repository's code, so a code change would change what the tests' seeded samples say (and how long they run)."""
    from trajforge.small_model import REPO, ensure_small_model

    sessions = [path.read_text(encoding="utf-8") for path in sorted((REPO / "examples" / "sessions").glob("*.json"))]
    return ensure_small_model(tmp_path_factory.mktemp("models") / "small-qwen3", texts=sessions)


@pytest.fixture(scope="session")
def front_url(serve_url, small_model):
    """The generate front on the shared Serve instance, serving the small model as `small` (embeddings from its `embed` app)."""
    from ray import serve

    from serve_apps.generate.app import build_app

    serve.run(build_app({"model": str(small_model), "served_model_name": "small", "num_cpus": 0.05}), name="generate-test",
              route_prefix="/generate-test")
    return f"{serve_url}/generate-test"


@pytest.fixture(scope="session")
def engine(small_model):
    """The same model in this process: what the front's answers are compared with."""
    from actors.engines.transformers_engine import TransformersEngine

    return TransformersEngine(small_model, device="cpu")
