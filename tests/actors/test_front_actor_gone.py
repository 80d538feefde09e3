"""The front over GenerationActors when an actor is gone for good (dead, no restarts left): a 503 in OpenAI's shape with
Retry-After, for unstreamed and streamed requests alike, and a `/health` that says so; never a bare 500."""

from __future__ import annotations

import httpx

from actors.settings import load_actor_settings


def test_an_actor_gone_for_good_is_a_503_with_retry_after_and_health_says_so(serve_url, small_model):
    import ray
    from ray import serve

    from actors.actor import start_actors
    from serve_apps.generate.app import build_app

    settings = load_actor_settings(assignments=[("actors.model", str(small_model)), ("actors.num_cpus", 0), ("actors.max_restarts", 0)])
    (actor,) = start_actors(settings, named=True)
    try:
        serve.run(build_app({"backend": "actors", "start_actors": False, "served_model_name": "small", "num_cpus": 0.05}),
                  name="generate-gone", route_prefix="/generate-gone")
        front = f"{serve_url}/generate-gone"
        assert httpx.get(f"{front}/health", timeout=30).status_code == 200
        ray.kill(actor, no_restart=True)
        for path, body in (("/v1/completions", {"prompt": "def f(", "max_tokens": 4}),
                           ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True,
                                                     "logprobs": False})):
            answer = httpx.post(f"{front}{path}", json=body, timeout=60)
            assert answer.status_code == 503 and answer.headers.get("retry-after") == "10", answer.text
            error = answer.json()["error"]
            assert error["type"] == "server_error" and error["code"] == "actor_unavailable" and "not restarted" in error["message"]
        health = httpx.get(f"{front}/health", timeout=30)
        assert health.status_code == 503 and health.json()["ok"] is False and "max_restarts" in health.json()["error"]
    finally:
        serve.delete("generate-gone")
        ray.kill(actor, no_restart=True)
