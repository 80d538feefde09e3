"""Fixtures for the actors' tests: the embedded small model, created once per session, and the OpenAI-compatible front over it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    from trajforge.small_model import ensure_small_model

    return ensure_small_model(tmp_path_factory.mktemp("models") / "small-qwen3")


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
