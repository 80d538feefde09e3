"""`embedding.remote` (the DomainTagger's and `trajforge embed --url`'s client of a deployed embed service): the URL forms
it takes, inputs of any size, and an answer that is not an embed service's."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from trajforge import embedding
from trajforge.cli.main import main


@pytest.fixture(scope="module")
def embed_url(serve_url, http) -> str:
    deadline = time.monotonic() + 120
    while not http.get("/v1/embed").json()["ready"]:
        assert time.monotonic() < deadline, "the embed model did not load"
        time.sleep(0.5)
    return serve_url


@pytest.mark.parametrize("suffix", ["", "/", "/v1/embed", "/v1/embed/"])
def test_the_service_url_or_the_endpoint_url_both_work(embed_url, embedder, capsys, suffix):
    """The specification's EMBEDDING_SERVICE_URL is the endpoint itself (`<base>/v1/embed`); it was sent to `/v1/embed/v1/embed`."""
    text = "useEffect re-renders the component twice"
    assert np.allclose(embedding.remote(embed_url + suffix)([text])[0], embedder.embed([text])[0], atol=1e-5)
    assert main(["embed", text, "--url", embed_url + suffix]) == 0
    assert f"source:  {embed_url}/v1/embed\n" in capsys.readouterr().out


def test_more_texts_than_one_request_takes_and_texts_past_the_body_limit(embed_url, embedder, monkeypatch):
    """Texts go in requests of REMOTE_BATCH (the service refuses more than its max_inputs), each cut to the 512 characters
    the service would embed (a 6 MB text was a 413 body_too_large)."""
    monkeypatch.setattr(embedding, "REMOTE_BATCH", 3)
    texts = ["x" * 6_000_000] + [f"pytest fixture number {index}" for index in range(7)]
    vectors = embedding.remote(embed_url)(texts)
    assert np.allclose(vectors, embedder.embed(texts), atol=1e-5)


def test_an_answer_that_is_not_embeddings_is_a_runtime_error_the_tagger_falls_back_on():
    class NotAnEmbedService(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotAnEmbedService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(RuntimeError, match="not with embeddings"):
            embedding.remote(url)(["hello"])
        from trajforge.domains import DomainTagger

        assert DomainTagger(embed=embedding.remote(url)).tag("kubectl apply the helm chart")["method"] == "keywords"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
