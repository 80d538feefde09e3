"""Shared fixtures: one local Ray and one Serve instance per test session, with these apps.

- `/`        the ingest app with no rate limits (most tests); its `/v1/events` takes the key EVENTS_KEY
- `/limited` an ingest app with tiny limits and a trusted proxy (rate-limit tests)
- `/crash`   an ingest app whose replica the durability test SIGKILLs
- `/build`   an ingest app whose lake only the build pipeline's tests fill
- `/v1/embed` the embed app; `/broken-embed` one whose model cannot load (503 tests)
Each ingest app has its own lake under the session's temp folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from helpers import EVENTS_KEY, free_port
from sft_builds import rows

os.environ.setdefault("RAY_DEDUP_LOGS", "0")


NO_LIMITS = {"per_address_per_minute": 0, "per_address_per_hour": 0, "sessions_per_machine_per_hour": 0, "envelopes_per_session": 0}


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free localhost port, for the session (tests/s3_server.py)."""
    from s3_server import moto_s3

    with moto_s3() as server:
        yield server


@pytest.fixture(scope="session")
def lakes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lakes")
    return {name: root / name for name in ("main", "limited", "crash", "build")}


@pytest.fixture(scope="session")
def serve_url(lakes) -> str:
    """Base URL of the shared Serve instance (started once, shut down at the end of the session)."""
    import ray
    from ray import serve

    from serve_apps.embed.app import build_app as build_embed_app
    from serve_apps.ingest.app import build_app
    from trajforge.serving import shutdown, wait_healthy

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"lake": str(lakes["main"]), "rate_limits": NO_LIMITS, "events": {"api_keys": [EVENTS_KEY]}}), name="ingest",
              route_prefix="/")
    serve.run(
        build_app(
            {
                "lake": str(lakes["limited"]),
                "trusted_proxies": ["127.0.0.1/32"],
                "rate_limits": {"per_address_per_minute": 6, "per_address_per_hour": 1000, "sessions_per_machine_per_hour": 2, "envelopes_per_session": 3},
            },
        ),
        name="limited",
        route_prefix="/limited",
    )
    serve.run(build_app({"lake": str(lakes["crash"]), "rate_limits": NO_LIMITS}), name="crash", route_prefix="/crash")
    serve.run(build_app({"lake": str(lakes["build"]), "rate_limits": NO_LIMITS, "num_cpus": 0.05}), name="build", route_prefix="/build")
    serve.run(build_embed_app({"num_cpus": 0.25, "rate_limits": {"per_address_per_minute": 0, "per_address_per_hour": 0}}), name="embed",
              route_prefix="/v1/embed")
    serve.run(build_embed_app({"num_cpus": 0.05, "model": "/nonexistent/model"}), name="broken-embed", route_prefix="/broken-embed")
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, 120)
    yield url
    shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """The embedded model's code path with tiny sizes: a tokenizer trained on the test rows' text, random weights."""
    from trajforge.small_model import ensure_small_model

    texts = [message["content"] for row in rows(64, seed=1) for message in row["messages"]]
    return ensure_small_model(tmp_path_factory.mktemp("learner-model") / "tiny-qwen3", texts=texts, vocab_size=512,
                              hidden_size=64, layers=2, heads=4, kv_heads=2)


@pytest.fixture(scope="session")
def http(serve_url):
    with httpx.Client(base_url=serve_url, timeout=60) as client:
        yield client


@pytest.fixture
def client(serve_url):
    from trajforge.client import IngestClient

    with IngestClient(serve_url, max_retries=0) as ingest_client:
        yield ingest_client


@pytest.fixture(scope="session")
def embedder():
    """The in-process embedder (the same class the embed replicas use)."""
    from trajforge.embedding import Embedder

    return Embedder()
