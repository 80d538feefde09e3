"""This test session's Ray metrics as Prometheus scrapes them: each node's metrics export port.

Replicas push what they record to their node's agent every few seconds, so a test reads the values
before it acts and waits (`short_of`) until they have grown. `queried_series` and `matchers` read the PromQL of the
Grafana dashboard (trajforge.grafana_dashboard); `record_metrics` stands in for `ray.util.metrics` without Ray.
"""

from __future__ import annotations

import re
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

PROMQL_FUNCTIONS = {"sum", "rate", "histogram_quantile", "label_values"}
STRING = r'"(?:[^"\\]|\\.)*"'


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


def queried_series(expr: str) -> set[str]:
    """The series names a PromQL expression (or a `label_values(...)` variable query) reads: what is left once strings,
    label matchers, ranges, `by (...)` clauses, numbers and the functions the dashboard uses are taken out. A name that
    is none of these (a misspelt function, a stray word) comes back too, so a caller that maps each back to a metric
    catches it."""
    bare = re.sub(STRING, '""', expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"label_values\((\w+)\s*,\s*\w+\)", r"\1", bare)  # its second argument is a label
    return {word for word in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare) if word not in PROMQL_FUNCTIONS}


def matchers(expr: str) -> list[tuple[str, str]]:
    """(series, label) of each label matcher and `by` label in a PromQL expression: `x_bucket{a="1"}[5m]) by (le, b)`
    gives (x_bucket, a), (x_bucket, le), (x_bucket, b); a `by` clause belongs to the series before it."""
    found, series = [], None
    for match in re.finditer(r"(\w+)\{([^}]*)\}|\b(?:by|without)\s*\(([^)]*)\)", re.sub(STRING, '""', expr)):
        if match.group(1):
            series = match.group(1)
            found += [(series, re.match(r"\s*(\w+)", item).group(1)) for item in match.group(2).split(",") if item.strip()]
        else:
            found += [(series, label.strip()) for label in match.group(3).split(",")]
    return found


class Recorder:
    """Stands in for a `ray.util.metrics` class (`record_metrics`): remembers its kind, name, tag keys, default tags and
    what it was given."""

    kind = ""
    made: dict[str, Recorder] = {}

    def __init__(self, name: str, description: str = "", boundaries=None, tag_keys=None):
        self.name, self.tag_keys, self.default_tags, self.values = name, tag_keys, {}, []
        Recorder.made[name] = self

    def set_default_tags(self, tags: dict[str, str]) -> Recorder:
        self.default_tags = tags
        return self

    def _record(self, value: float, tags=None) -> None:
        self.values.append(value)

    def observe(self, value: float, tags=None) -> None:
        self.values.append(value)

    def inc(self, value: float = 1.0, tags=None) -> None:
        self.values.append(value)


def record_metrics(monkeypatch) -> dict[str, Recorder]:
    """Replaces `ray.util.metrics`' Counter, Histogram and Gauge with recorders for the test; the metrics made from then
    on, by name."""
    from ray.util import metrics

    Recorder.made = {}
    for kind in ("Counter", "Histogram", "Gauge"):
        monkeypatch.setattr(metrics, kind, type(kind, (Recorder,), {"kind": kind.lower()}))
    return Recorder.made


def dashboard_queries(dashboard: dict) -> list[str]:
    """Every PromQL of a Grafana dashboard: its panels' targets (those of collapsed rows too) and its variables' queries."""
    panels = [*dashboard["panels"], *(inner for panel in dashboard["panels"] for inner in panel.get("panels", []))]
    variables = [variable["query"]["query"] for variable in dashboard["templating"]["list"] if variable["type"] == "query"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])] + variables


def dashboard_series(*metrics) -> set[str]:
    """The series trajforge's Grafana dashboard queries for these metrics (trajforge.metric_names), e.g. to check that a
    scrape has them all."""
    from trajforge.grafana_dashboard import build_dashboard
    from trajforge.metric_names import by_series

    found = {series for expr in dashboard_queries(build_dashboard()) for series in queried_series(expr) if by_series(series) in metrics}
    assert {by_series(series) for series in found} == set(metrics), "the dashboard charts each of them"
    return found
