"""This test session's Ray metrics as Prometheus scrapes them: each node's metrics export port.

Replicas push what they record to their node's agent every few seconds, so a test reads the values
before it acts and waits (`short_of`) until they have grown.
"""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape() -> dict[tuple[str, frozenset], float]:
    """Every sample of every live node: (sample name, its labels) -> value."""
    import ray

    samples: dict[tuple[str, frozenset], float] = {}
    for node in ray.nodes():
        if node["Alive"]:
            text = httpx.get(f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics", timeout=10).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def total(samples: dict[tuple[str, frozenset], float], name: str, **tags: str) -> float:
    """The sum of `name` over the series (workers, replicas) whose labels include `tags`."""
    wanted = set(tags.items())
    return sum(value for (sample, labels), value in samples.items() if sample == name and wanted <= labels)


def key(name: str, **tags: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A metric's sample name and the tags its series must have: a key of `short_of`'s increments."""
    return name, tuple(sorted(tags.items()))


def short_of(before: dict[tuple[str, frozenset], float], increments: dict[tuple, float], timeout_s: float = 90.0) -> dict[tuple, tuple]:
    """Scrapes until every key's total is at least its total in `before` plus its increment; the keys that did not get
    there in time, each with (before, last seen, increment wanted). Empty when all did."""
    wanted = {name_tags: total(before, name_tags[0], **dict(name_tags[1])) + increment for name_tags, increment in increments.items()}
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape()
        seen = {name_tags: total(samples, name_tags[0], **dict(name_tags[1])) for name_tags in wanted}
        short = {name_tags: (wanted[name_tags] - increments[name_tags], seen[name_tags], increments[name_tags])
                 for name_tags in wanted if seen[name_tags] < wanted[name_tags]}
        if not short or time.monotonic() > deadline:
            return short
        time.sleep(1.0)
