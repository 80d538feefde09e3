"""The generation actors' latency histogram has buckets up to past the generation timeout: Prometheus' quantiles of a
histogram never read above its last finite bound, so with bounds that stopped at 60 s a p99 panel said 60 s while calls
took the two minutes of `generation_timeout_s` (configs/actors.yaml) and timed out."""

from __future__ import annotations

from actors.actor import _Metrics
from actors.settings import load_actor_settings


def test_a_call_as_long_as_the_generation_timeout_lands_in_a_finite_bucket():
    timeout_s = load_actor_settings().generation_timeout_s
    bounds = _Metrics({"actor": "0"}).latency.boundaries
    assert bounds == sorted(bounds)
    assert bounds[-1] > timeout_s + 1  # a call that timed out is observed just past the timeout
