"""The generation actors' metrics through `ray.util.metrics`: latency, tokens/s, sandbox and parse failures."""

from __future__ import annotations

import pytest


class _Recorder:
    """Stands in for a `ray.util.metrics` class: remembers its name and what it was given."""

    made: dict[str, _Recorder] = {}

    def __init__(self, name: str, description: str = "", boundaries=None, tag_keys=None):
        self.name, self.values = name, []
        _Recorder.made[name] = self

    def observe(self, value: float, tags=None) -> None:
        self.values.append(value)

    def inc(self, value: float = 1.0, tags=None) -> None:
        self.values.append(value)


@pytest.fixture
def recorded(monkeypatch):
    from ray.util import metrics

    _Recorder.made = {}
    for kind in ("Counter", "Histogram", "Gauge"):
        monkeypatch.setattr(metrics, kind, _Recorder)
    return _Recorder.made


def test_latency_tokens_per_second_and_failures_are_recorded(recorded):
    from actors.actor import _Metrics

    recorder = _Metrics()
    recorder.observe(2.0, 10)
    recorder.observe(0.5, 0)  # a call that only failed: latency, no tokens
    recorder.inc("parse_failures")
    recorder.inc("sandbox_failures")
    recorder.inc("sandbox_failures")
    assert recorded["trajforge_generation_latency_s"].values == [2.0, 0.5]
    assert recorded["trajforge_generation_tokens_per_s"].values == [5.0]
    assert recorded["trajforge_generated_tokens"].values == [10]
    assert recorded["trajforge_parse_failures"].values == [1.0]
    assert recorded["trajforge_sandbox_failures"].values == [1.0, 1.0]
