"""A caller that goes away stops its generation on the actor, also when its call has not begun yet: the cancel runs in
the actor's control group, and one that comes before its call drops the call when it begins."""

from __future__ import annotations

import asyncio
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
        asyncio.run(_six_clients_give_up(front))
        deadline = time.monotonic() + 20  # each counted where its client went away: 3 streams, 3 requests
        while (told := httpx.get(f"{front}/health", timeout=30).json()).get("requests_hung_up", 0) + told.get("streams_hung_up", 0) < 6 \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (told.get("streams_hung_up", 0), told.get("requests_hung_up", 0)) == (3, 3)
        started = time.monotonic()  # the engine takes calls in turn: this one waits for whatever of the six still runs
        answer = httpx.post(f"{front}/v1/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=120)
        assert answer.status_code == 200 and time.monotonic() - started < 30
        health = ray.get(actor.health.remote())
        assert health["generated_tokens"] - before["generated_tokens"] < 4000  # none ran to its end
        assert health.get("calls_cancelled", 0) + health.get("streams_cancelled", 0) >= 1  # the running one was stopped
    finally:
        serve.delete("generate-cancel")
        ray.kill(actor, no_restart=True)


async def _six_clients_give_up(front: str) -> None:
    """Six long requests, three streamed; once the front has taken all six (and called the actor for each), their
    clients hang up."""
    async with httpx.AsyncClient(timeout=60) as http:
        taken = (await http.get(f"{front}/health")).json().get("requests", 0)

        async def ask(index: int) -> None:
            body = dict(LONG, seed=index, stream=index % 2 == 1, logprobs=False)
            async with http.stream("POST", f"{front}/v1/completions", json=body) as answer:
                async for _ in answer.aiter_lines():
                    pass

        clients = [asyncio.create_task(ask(index)) for index in range(6)]
        deadline = time.monotonic() + 60
        while (await http.get(f"{front}/health")).json().get("requests", 0) < taken + 6 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        for client in clients:
            client.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
