"""An embed replica that joins running ones (autoscaling up, a failed replica's restart, a redeploy) is routed to only
once its model has loaded. Before, it answered 503 at once while loading and, being the least busy replica, drew most
requests: stepping up from 1 to 2 replicas under load turned about 4 requests in 5 into 503s for the load's 25 s."""

from __future__ import annotations

import threading
import time

import pytest

from serve_apps.embed import app as embed_app
from serve_apps.embed.settings import EmbedSettings

LOAD_S = 0.5


@pytest.fixture
def slow_model(monkeypatch):
    """The model's loading takes LOAD_S (fails, if `failing` is set) instead of loading the real one."""
    failing = threading.Event()

    class SlowEmbedder:
        device = "cpu"

        def __init__(self, **kwargs):
            time.sleep(LOAD_S)
            if failing.is_set():
                raise OSError("no model here")

    monkeypatch.setattr("serve_apps.embed.service.Embedder", SlowEmbedder)
    return failing


def _construct(monkeypatch, peers: bool) -> tuple[embed_app.EmbedDeployment, float]:
    monkeypatch.setattr(embed_app, "peers_running", lambda: peers)
    started = time.monotonic()
    deployment = embed_app.EmbedDeployment(EmbedSettings())
    return deployment, time.monotonic() - started


def test_a_replica_joining_running_ones_returns_from_its_constructor_with_its_model_loaded(slow_model, monkeypatch):
    deployment, took = _construct(monkeypatch, peers=True)
    assert took >= LOAD_S and deployment.status()["ready"] is True


def test_the_first_replicas_load_in_the_background_and_answer_503_meanwhile(slow_model, monkeypatch):
    deployment, took = _construct(monkeypatch, peers=False)
    assert took < LOAD_S and deployment.status()["ready"] is False
    assert deployment.service.loaded.wait(10) and deployment.status()["ready"] is True


def test_a_joining_replica_whose_model_fails_to_load_still_starts_and_says_why(slow_model, monkeypatch):
    slow_model.set()
    deployment, _ = _construct(monkeypatch, peers=True)
    assert deployment.status()["ready"] is False and deployment.status()["error"] == "OSError: no model here"


def test_outside_a_replica_there_are_no_peers():
    assert embed_app.peers_running() is False
