"""The generation actors' metrics through `ray.util.metrics`: latency, tokens/s, sandbox and parse failures, each tagged
with the actor's index, engine and model; read as Prometheus scrapes them after a real loop run."""

from __future__ import annotations

import time

import pytest
from ray_metrics import dashboard_series, record_metrics, scrape

from trajforge import metric_names


@pytest.fixture
def recorded(monkeypatch):
    return record_metrics(monkeypatch)


def test_latency_tokens_per_second_and_failures_are_recorded(recorded):
    from actors.actor import _Metrics

    recorder = _Metrics({"actor": "2", "engine": "transformers", "model": "/models/small"})
    recorder.observe(2.0, 10)
    recorder.observe(0.5, 0)  # a call that only failed: latency, no tokens
    recorder.inc("parse_failures")
    recorder.inc("sandbox_failures")
    recorder.inc("sandbox_failures")
    assert recorded["trajforge_actor_latency_s"].values == [2.0, 0.5]
    assert recorded["trajforge_generation_tokens_per_s"].values == [5.0]
    # the counters start at 0, so their series exist before the first failure
    assert recorded["trajforge_generated_tokens"].values == [0, 10]
    assert recorded["trajforge_parse_failures"].values == [0, 1.0]
    assert recorded["trajforge_sandbox_failures"].values == [0, 1.0, 1.0]
    for metric in recorded.values():
        assert metric.tag_keys == ("actor", "engine", "model")
        assert metric.default_tags == {"actor": "2", "engine": "transformers", "model": "/models/small"}


def test_a_loop_run_reaches_the_nodes_prometheus_endpoint_with_the_actors_tags(serve_url, small_model, tmp_path):
    import ray

    from actors.actor import start_actors
    from actors.run import run_loop
    from actors.settings import load_actor_settings

    settings = load_actor_settings(assignments=[("actors.model", str(small_model)), ("actors.num_cpus", 0), ("actors.sandbox_workers", 1),
                                                ("actors.lake", str(tmp_path / "lake")), ("actors.loop.max_steps", 1),
                                                ("actors.loop.max_tokens", 16), ("actors.loop.state_max_tokens", 4)])
    tags = {"actor": "0", "engine": "transformers", "model": str(small_model)}
    before = scrape()
    (actor,) = start_actors(settings)
    try:
        tasks = [{"task_id": f"metrics-{i}", "instruction": "Replace print calls with logging.info", "files": {"app.py": "print('x')\n"}}
                 for i in range(2)]
        summaries = run_loop([actor], tasks, health_interval_s=None)
        health = ray.get(actor.health.remote())
    finally:
        ray.kill(actor, no_restart=True)
    assert [s["steps"] for s in summaries] == [1, 1]
    calls, tokens = health["requests"], health["generated_tokens"]
    assert calls >= 2 and tokens > 0 and health["parse_failures"] == 2  # 16 tokens: no closed action from the small model
    wanted = {"ray_trajforge_actor_latency_s_count": calls, "ray_trajforge_generation_tokens_per_s_count": calls,
              "ray_trajforge_generated_tokens_total": tokens, "ray_trajforge_parse_failures_total": 2,
              "ray_trajforge_sandbox_failures_total": 0}  # none in this run, yet its series is there from the start
    deadline, seen = time.monotonic() + 90, {}
    while seen != wanted and time.monotonic() < deadline:
        time.sleep(1.0)
        seen = _new_series(before, scrape(), wanted, tags)
    assert seen == wanted
    exported = {name for name, labels in scrape() if set(tags.items()) <= labels}
    actors_metrics = [metric for metric in metric_names.ALL if metric.tags == metric_names.ACTOR_TAGS]
    assert dashboard_series(*actors_metrics) <= exported  # what the Grafana dashboard queries is what Ray exports
    latency_s = _new_series(before, scrape(), {"ray_trajforge_actor_latency_s_sum": None}, tags)["ray_trajforge_actor_latency_s_sum"]
    assert 0 < latency_s < 120


def _new_series(before: dict, after: dict, names, tags: dict[str, str]) -> dict[str, float]:
    """Per name, the sum of the series with these tags that `before` did not have: this test's actor is a new worker,
    so its series are new, and those of earlier tests' actors (which may vanish with their workers) are left out."""
    found: dict[str, float] = {}
    for (name, labels), value in after.items():
        if name in names and set(tags.items()) <= labels and (name, labels) not in before:
            found[name] = found.get(name, 0) + value
    return found
