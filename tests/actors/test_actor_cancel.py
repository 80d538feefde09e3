"""A caller that goes away stops its generation on the actor, also when its call has not begun yet: the cancel runs in
the actor's control group, and one that comes before its call drops the call when it begins."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from actors.settings import load_actor_settings

LONG = {"prompt": "def main(", "max_tokens": 4000, "ignore_eos": True, "temperature": 1.0}


@pytest.fixture(scope="module")
def actor_settings(small_model):
    return load_actor_settings(assignments=[("actors.model", str(small_model)), ("actors.num_cpus", 0),
                                            ("actors.generation_timeout_s", 120)])


def test_a_cancel_that_comes_before_its_call_drops_the_call(serve_url, actor_settings):
    import ray

    from actors.actor import CONTROL_GROUP, start_actors

    (actor,) = start_actors(actor_settings)
    try:
        before = ray.get(actor.health.remote())
        for call_id in ("early-call", "early-stream"):
            assert ray.get(actor.cancel_stream.options(concurrency_group=CONTROL_GROUP).remote(call_id)) is False
        (result,) = ray.get(actor.generate.remote([dict(LONG, seed=1)], "early-call"), timeout=60)
        assert result["finish_reason"] == "error" and result["error"].startswith("cancelled")
        pieces = [ray.get(ref) for ref in actor.generate_stream.options(num_returns="streaming").remote(dict(LONG, seed=2), "early-stream")]
        assert pieces == []
        health = ray.get(actor.health.remote())
        assert health["generated_tokens"] == before["generated_tokens"]  # neither reached the engine
        assert health.get("calls_cancelled", 0) == before.get("calls_cancelled", 0) + 1
        assert health.get("streams_cancelled", 0) == before.get("streams_cancelled", 0) + 1
    finally:
        ray.kill(actor, no_restart=True)


def test_requests_abandoned_while_the_actor_is_busy_stop_there(serve_url, actor_settings):
    """Six clients give up on long answers at once: four calls fill the actor's default concurrency group, two wait in
    Ray's queue. Each is stopped (the running one at its next token, the others before they begin) instead of generating
    4000 tokens for nobody while later requests wait behind them."""
    import ray
    from ray import serve

    from actors.actor import start_actors
    from serve_apps.generate.app import build_app

    (actor,) = start_actors(actor_settings, named=True)
    try:
        serve.run(build_app({"backend": "actors", "start_actors": False, "served_model_name": "small", "num_cpus": 0.05}),
                  name="generate-cancel", route_prefix="/generate-cancel")
        front = f"{serve_url}/generate-cancel"
        before = ray.get(actor.health.remote())

        def abandon(index: int) -> None:
            body = dict(LONG, seed=index, stream=index % 2 == 1, logprobs=False)
            give_up = time.monotonic() + 1.5  # then it closes its connection
            try:
                with httpx.stream("POST", f"{front}/v1/completions", json=body, timeout=httpx.Timeout(60, read=1.5)) as answer:
                    for _ in answer.iter_lines():
                        if time.monotonic() > give_up:
                            break
            except httpx.ReadTimeout:
                pass

        clients = [threading.Thread(target=abandon, args=(index,)) for index in range(6)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=60)

        def cancelled(health):
            return sum(health.get(name, 0) - before.get(name, 0) for name in ("calls_cancelled", "streams_cancelled"))

        deadline = time.monotonic() + 60
        while cancelled(health := ray.get(actor.health.remote())) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cancelled(health) == 6
        answer = httpx.post(f"{front}/v1/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=60)
        assert answer.status_code == 200
        assert ray.get(actor.health.remote())["generated_tokens"] - before["generated_tokens"] < 4000  # none ran to its end
    finally:
        serve.delete("generate-cancel")
        ray.kill(actor, no_restart=True)
