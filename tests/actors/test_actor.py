"""GenerationActor on Ray: warm start, health, per-request failures, and a crash that loses no work."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from actors.settings import load_actor_settings
from trajforge.errors import ConfigError


@pytest.fixture(scope="module")
def actor_settings(small_model):
    return load_actor_settings(assignments=[("actors.model", str(small_model)), ("actors.num_cpus", 0),
                                            ("actors.generation_timeout_s", 60)])


def test_actor_warms_up_generates_and_reports_health(serve_url, actor_settings):
    import ray

    from actors.actor import start_actors

    (actor,) = start_actors(actor_settings)
    try:
        health = ray.get(actor.health.remote())
        assert health["ok"] and health["kind"] == "generation actor" and health["engine"] == "transformers"
        results = ray.get(actor.generate.remote([{"prompt": "def f(", "max_tokens": 6, "seed": 1},
                                                 {"prompt": "x", "max_tokens": -3},
                                                 {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}]))
        assert [r["finish_reason"] != "error" for r in results] == [True, False, True]
        assert "invalid request" in results[1]["error"]
        assert len(results[0]["token_ids"]) == 6 == len(results[0]["logprobs"])
        assert ray.get(actor.health.remote())["requests"] == 3
    finally:
        ray.kill(actor, no_restart=True)


def test_a_killed_actor_restarts_and_finishes_its_in_flight_call(serve_url, actor_settings):
    import ray

    from actors.actor import start_actors

    (actor,) = start_actors(actor_settings)
    try:
        first_pid = ray.get(actor.health.remote())["pid"]
        batch = [{"prompt": "class Order:", "max_tokens": 300, "temperature": 0.7, "seed": seed} for seed in range(30)]
        pending = actor.generate.remote(batch)
        time.sleep(1.0)
        assert not ray.wait([pending], timeout=0)[0], "the call must still be in flight when the actor dies"
        ray.kill(actor, no_restart=False)
        results = ray.get(pending, timeout=240)
        assert len(results) == 30 and all(r["finish_reason"] != "error" and r["completion_tokens"] > 0 for r in results)
        deadline = time.monotonic() + 60
        while ray.get(actor.health.remote())["pid"] == first_pid and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ray.get(actor.health.remote())["pid"] != first_pid
    finally:
        ray.kill(actor, no_restart=True)


def test_actors_that_cannot_get_their_cpus_say_so_before_they_wait(serve_url, actor_settings, caplog):
    """The session's Serve holds part of its Ray's 2 CPUs, as `trajforge serve` does on a head node: an actor asking for
    2 CPUs would wait forever; the start says so, naming the setting."""
    import ray

    from actors.actor import start_actors

    with caplog.at_level(logging.WARNING, logger="trajforge.cluster"):
        (actor,) = start_actors(actor_settings.model_copy(update={"num_cpus": 2.0}), wait=False)
    ray.kill(actor, no_restart=True)
    assert "the generation actors ask for actors.num_cpus=2 CPUs each and wait until that many are free" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trajforge.cluster"):
        (actor,) = start_actors(actor_settings, wait=False)  # 0 CPUs: nothing to say
    ray.kill(actor, no_restart=True)
    assert caplog.text == ""


def test_engine_choices_are_checked_with_clear_errors(small_model):
    from actors.engines.factory import build_engine

    with pytest.raises(ConfigError, match="base_url is required"):
        build_engine(load_actor_settings(assignments=[("actors.engine", "openai")]))
    with pytest.raises(ConfigError, match="gpu extra"):
        build_engine(load_actor_settings(assignments=[("actors.engine", "vllm"), ("actors.num_gpus", 1)]))
    with pytest.raises(ConfigError, match="actors.engine"):
        load_actor_settings(assignments=[("actors.engine", "llama.cpp")])


def test_front_over_named_actors_and_the_supervisor(serve_url, actor_settings):
    import threading

    import ray
    from ray import serve

    from actors.actor import find_actors, start_actors
    from actors.supervisor import supervise
    from actors.engines.openai_engine import OpenAIEngine
    from actors.engines.types import GenerationRequest
    from serve_apps.generate.app import build_app

    (actor,) = start_actors(actor_settings, named=True)
    client = None
    try:
        assert len(find_actors()) == 1
        serve.run(build_app({"backend": "actors", "start_actors": False, "served_model_name": "small", "num_cpus": 0.05}), name="generate-actors",
                  route_prefix="/generate-actors")
        client = OpenAIEngine(f"{serve_url}/generate-actors", "small", api_key_env=None, token_ids_in_logprobs=True)
        request = GenerationRequest(prompt="def handler(", max_tokens=6, temperature=0.8, seed=4)
        (remote,) = client.generate([request])
        (direct,) = ray.get(actor.generate.remote([request]))
        assert remote.error is None and remote.token_ids == direct["token_ids"] and remote.text == direct["text"]
        chat = httpx.post(f"{serve_url}/generate-actors/v1/chat/completions", timeout=60,
                          json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "logprobs": True, "seed": 1}).json()
        tokens = [entry["token"] for entry in chat["choices"][0]["logprobs"]["content"]]
        assert tokens and not any(token.startswith("token_id:") for token in tokens)  # the front reads the actors' tokenizer
        _streams_live_from_the_actor_and_stops_when_the_reader_hangs_up(f"{serve_url}/generate-actors", actor, direct["text"])
        _an_unstreamed_answer_stops_on_the_actor_when_its_client_hangs_up(f"{serve_url}/generate-actors", actor)

        reports, stop = [], threading.Event()
        watcher = threading.Thread(target=supervise, args=([actor],), kwargs={"interval_s": 0.2, "stop": stop,
                                                                              "on_report": lambda r: (reports.append(r), stop.set())})
        watcher.start()
        watcher.join(timeout=60)
        assert reports and reports[0][0]["healthy"] and reports[0][0]["health"]["requests"] >= 1
        _an_actor_that_dies_mid_stream_ends_the_stream_with_an_error(f"{serve_url}/generate-actors", actor)
    finally:
        if client is not None:
            client.close()
        serve.delete("generate-actors")
        ray.kill(actor, no_restart=True)


def test_the_front_starts_the_configured_actors_when_none_run(serve_url, small_model, tmp_path, monkeypatch):
    import httpx
    import ray
    from ray import serve

    from actors.actor import find_actors
    from serve_apps.generate.app import build_app

    assert find_actors() == []
    for name, value in {"MODEL": small_model, "NUM_CPUS": 0.05, "LAKE": tmp_path / "lake", "SANDBOX_WORKERS": 1}.items():
        monkeypatch.setenv(f"TRAJFORGE__ACTORS__{name}", str(value))
    try:
        serve.run(build_app({"backend": "actors", "served_model_name": "small", "num_cpus": 0.05}), name="generate-auto",
                  route_prefix="/generate-auto")
        (actor,) = find_actors()
        answer = httpx.post(f"{serve_url}/generate-auto/v1/completions", json={"prompt": "def f(", "max_tokens": 4, "seed": 1}, timeout=60)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 4
        health = ray.get(actor.health.remote())
        assert health["requests"] == 1 and health["model"] == str(small_model)
    finally:
        serve.delete("generate-auto")
        for actor in find_actors():
            ray.kill(actor, no_restart=True)


def _an_actor_that_dies_mid_stream_ends_the_stream_with_an_error(front: str, actor) -> None:
    import json

    import httpx
    import ray

    body = {"prompt": "def main(", "max_tokens": 3000, "temperature": 1.0, "seed": 3, "stream": True}
    with httpx.Client(timeout=60) as http, http.stream("POST", f"{front}/v1/completions", json=body) as answer:
        lines = (line for line in answer.iter_lines() if line.startswith("data: "))
        first = [next(lines) for _ in range(3)]
        ray.kill(actor, no_restart=True)
        rest = list(lines)
    assert all("error" not in json.loads(line[6:]) for line in first)
    assert rest[-1] == "data: [DONE]" and "error" in json.loads(rest[-2][6:])


def _an_unstreamed_answer_stops_on_the_actor_when_its_client_hangs_up(front: str, actor) -> None:
    """Serve cancels the handler of a client that hung up; the front cancels the actor's call, whose engine stops."""
    import time

    import ray

    before = ray.get(actor.health.remote())
    body = {"prompt": "def main(", "max_tokens": 4000, "temperature": 1.0, "seed": 5}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after a second and closes its connection
        httpx.post(f"{front}/v1/completions", json=body, timeout=httpx.Timeout(60, read=1.0))
    deadline, health = time.monotonic() + 30, before
    while time.monotonic() < deadline and health["requests"] == before["requests"]:
        time.sleep(0.2)
        health = ray.get(actor.health.remote())
    assert health.get("calls_cancelled", 0) == before.get("calls_cancelled", 0) + 1
    assert 0 < health["generated_tokens"] - before["generated_tokens"] < 4000  # it ran, and stopped early


def _streams_live_from_the_actor_and_stops_when_the_reader_hangs_up(front: str, actor, expected: str) -> None:
    import json
    import time

    import httpx
    import ray

    body = {"prompt": "def handler(", "max_tokens": 6, "temperature": 0.8, "seed": 4, "stream": True}
    with httpx.stream("POST", f"{front}/v1/completions", json=body, timeout=60) as answer:
        events = [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data: {")]
    assert "".join(event["choices"][0]["text"] for event in events) == expected
    assert all(event["choices"][0]["logprobs"] is None for event in events)  # sent by the actor while it sampled

    before = ray.get(actor.health.remote())
    long = {"prompt": "def main(", "max_tokens": 3000, "temperature": 1.0, "seed": 2, "stream": True}
    with httpx.Client(timeout=60) as http, http.stream("POST", f"{front}/v1/completions", json=long) as answer:
        for count, _ in enumerate(line for line in answer.iter_lines() if line.startswith("data: ")):
            if count == 2:
                break
    deadline = time.monotonic() + 60
    while (health := ray.get(actor.health.remote()))["requests"] == before["requests"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert health.get("streams_cancelled", 0) == before.get("streams_cancelled", 0) + 1
    assert 3 <= health["generated_tokens"] - before["generated_tokens"] < 3000


def test_the_front_says_what_to_change_when_the_actors_have_no_room(actor_settings):
    from serve_apps.generate.service import _check_room

    roomy = actor_settings.model_copy(update={"count": 3, "num_cpus": 0.5, "num_gpus": 1})
    _check_room(roomy, {"CPU": 2.0, "GPU": 3.0})
    with pytest.raises(RuntimeError, match=r"3 GPU \(1 free\).*actors.num_gpus"):
        _check_room(roomy, {"CPU": 2.0, "GPU": 1.0})


def test_trajforge_serve_reports_why_an_application_did_not_start(serve_url, small_model, monkeypatch):
    """The replicas' own error reaches the user (`trajforge serve` prints it), not Serve's 'failed to update the deployments'."""
    from ray import serve

    from trajforge.errors import ServeStartError
    from trajforge.serving import deploy
    from trajforge.settings.serve_file import ServeFile

    monkeypatch.setenv("TRAJFORGE__ACTORS__MODEL", str(small_model))
    monkeypatch.setenv("TRAJFORGE__ACTORS__NUM_CPUS", "64")
    app = {"name": "generate-noroom", "route_prefix": "/generate-noroom", "import_path": "serve_apps.generate.app:build_app",
           "args": {"backend": "actors", "num_cpus": 0.05}}
    try:
        with pytest.raises(ServeStartError, match=r"'generate-noroom' did not start: .*no room .* 64 CPU"):
            url = httpx.URL(serve_url)  # the session's Serve: the same HTTP proxy, as trajforge serve requires on a running Serve
            deploy(ServeFile(applications=[app], http_options={"host": url.host, "port": url.port}))
    finally:
        serve.delete("generate-noroom")
