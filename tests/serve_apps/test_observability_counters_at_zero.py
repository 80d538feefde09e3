"""The embed app's and the generate front's untagged counters are exported at 0 from the replica's start, as the
generation actors' are: a series that first appears at 1 has no rate(), so the dashboard's "Streams hung up" and
"truncated" panels showed "No data" on a healthy system and never showed a first hang-up or truncation."""

from __future__ import annotations

import pytest
from ray_metrics import record_metrics

from trajforge import metric_names as names


@pytest.fixture
def recorded(monkeypatch):
    return record_metrics(monkeypatch)


def test_the_embed_apps_counters_start_at_zero(recorded):
    from serve_apps.embed.metrics import EmbedMetrics

    EmbedMetrics()
    assert recorded[names.EMBED_TEXTS.name].values == [0] and recorded[names.EMBED_TRUNCATED_INPUTS.name].values == [0]


def test_the_generate_fronts_counters_start_at_zero(recorded):
    from serve_apps.generate.metrics import GenerateMetrics

    metrics = GenerateMetrics()
    metrics.add("streams_hung_up")
    assert recorded[names.GENERATE_STREAMS_HUNG_UP.name].values == [0, 1] and recorded[names.GENERATE_COMPLETION_TOKENS.name].values == [0]
