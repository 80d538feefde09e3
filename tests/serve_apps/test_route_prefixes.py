"""Serve hands an application every path under its route prefix: each app answers its own routes alone, and a 404
naming them for the rest, in the app's error shape."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("method,prefix,below", [("POST", "/v1/embed", "/anything"), ("GET", "/v1/embed", "/status/extra"),
                                                ("POST", "/broken-embed", "/x")])
def test_a_path_below_the_embed_route_is_404_not_the_embed_route(http, method, prefix, below):
    response = http.request(method, prefix + below, json={"input": "hello"})
    body = response.json()
    assert response.status_code == 404 and body["error"] == "not_found", body
    assert f"no route {prefix + below}: this application answers {prefix} alone" in body["message"]


def test_the_embed_route_itself_still_answers_with_or_without_a_trailing_slash(http):
    assert http.get("/v1/embed").status_code == 200 and http.get("/v1/embed/").status_code == 200


@pytest.mark.parametrize("method,path", [("POST", "/v1/training/ingest/extra"), ("POST", "/v1/events/x"), ("GET", "/health/x"),
                                         ("POST", "/limited/v1/sessions/open/x"), ("POST", "/v1/embeddings/x")])
def test_a_path_below_an_ingest_route_is_404(http, method, path):
    response = http.request(method, path, json={})
    assert response.status_code == 404 and response.json()["error"] == "not_found"
