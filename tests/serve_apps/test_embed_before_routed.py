"""`/v1/embed` reaching the ingest app (at `/`) instead of the embed app: at start, `trajforge serve` deploys the ingest
app first, so its `/health` answers about 2 s before Serve routes `/v1/embed` to the embed app. The specification's
server answers 503 until its model has loaded, never 404: so does the ingest app while the embed app is not running,
and once it runs, the ingest app hands the request on (the `/build` ingest app of the shared Serve shows that path)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from serve_apps.embed.forward import EmbeddingsForwarder
from serve_apps.http import HTTPError


def _wait_ready(http, path: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not http.get(path).json().get("ready"):
        assert time.monotonic() < deadline, "the embed model did not load"
        time.sleep(0.5)


def test_an_ingest_app_hands_v1_embed_on_to_the_running_embed_app(http, embedder):
    _wait_ready(http, "/build/v1/embed")  # GET: the embed app's status, through the ingest app at /build
    response = http.post("/build/v1/embed", json={"input": "React TypeScript frontend development"})
    assert response.status_code == 200, response.text
    [item] = response.json()["data"]
    assert item["index"] == 0 and np.allclose(item["embedding"], embedder.embed(["React TypeScript frontend development"])[0], atol=1e-5)
    missing = http.post("/build/v1/embed", json={"model": "sentence-transformers/all-MiniLM-L6-v2"})
    assert missing.status_code == 400 and missing.json()["error"] == "missing_input"


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_v1_embed_is_503_with_retry_after_while_the_embed_app_is_not_running(serve_url, method):
    forwarder = EmbeddingsForwarder("embed-not-deployed-yet", "ingest.embed_app")  # serve_url: Ray and Serve are up
    with pytest.raises(HTTPError) as refused:
        asyncio.run(forwarder.spec_route(method, b'{"input": "health check"}'))
    assert refused.value.status == 503 and refused.value.body["error"] == "model_not_ready"
    assert refused.value.headers["Retry-After"] == "5"


def test_v1_embed_stays_404_where_embeddings_are_off(serve_url):
    with pytest.raises(HTTPError) as refused:
        asyncio.run(EmbeddingsForwarder(None, "ingest.embed_app").spec_route("POST", b'{"input": "x"}'))
    assert refused.value.status == 404
