"""The Grafana dashboard of trajforge's own metrics (trajforge.metric_names), shaped like the ones Ray generates for its
Grafana (ray/dashboard/modules/metrics/grafana_dashboard_factory.py) so it sits beside them in Ray's dashboards folder:
Ray's graph panel template, the `${datasource}` variable, the `SessionName` and `ray_io_cluster` filters (plus the
comma-separated filters of RAY_GRAFANA_TRAJFORGE_DASHBOARD_GLOBAL_FILTERS, as Ray's RAY_GRAFANA_<NAME>_DASHBOARD_GLOBAL_FILTERS),
schema version 27, rows of two 12x8 panels, and rates over Ray's [5m] window.

`build_dashboard()` returns the JSON as a dict; `trajforge dashboard` prints, writes or installs it.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

from trajforge import metric_names as names
from trajforge.metric_names import Metric

UID = "trajforge"
TITLE = "trajforge"
FILE_NAME = "trajforge_grafana_dashboard.json"
GLOBAL_FILTERS_ENV = "RAY_GRAFANA_TRAJFORGE_DASHBOARD_GLOBAL_FILTERS"
STANDARD_FILTERS = ('SessionName=~"$SessionName"', 'ray_io_cluster=~"$Cluster"')
ACTOR_FILTER = 'actor=~"$Actor"'
WINDOW = "5m"
QUANTILES = (0.5, 0.95, 0.99)
PANEL_WIDTH, PANEL_HEIGHT, ROW_WIDTH = 12, 8, 24  # Ray's layout: two panels a row


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    unit: str
    targets: list[Target]
    stack: bool = False
    """Stacked areas (Ray's default, for rates that add up) or lines (quantiles, ratios)."""


@dataclass(frozen=True)
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)


def _selector(matchers: list[str]) -> str:
    return "{" + ",".join(matchers) + "}" if matchers else ""


def _rate(series: str, matchers: list[str], by: tuple[str, ...] = ()) -> str:
    """The per-second rate of a counter series over Ray's window, summed over the workers and replicas that export it."""
    grouping = f" by ({', '.join(by)})" if by else ""
    return f"sum(rate({series}{_selector(matchers)}[{WINDOW}])){grouping}"


def _total(metric: Metric, matchers: list[str], by: tuple[str, ...] = (), legend: str = "") -> Target:
    return Target(_rate(metric.series("_total"), matchers, by), legend)


def _quantiles(metric: Metric, matchers: list[str], by: tuple[str, ...] = (), legend: str = "") -> list[Target]:
    """p50, p95 and p99 of a histogram, per `by`: its buckets' rates summed per `le` (and `by`) first."""
    buckets = _rate(metric.series("_bucket"), matchers, ("le", *by))
    return [Target(f"histogram_quantile({q}, {buckets})", f"p{round(q * 100)}{legend}") for q in QUANTILES]


def _mean(metric: Metric, matchers: list[str], legend: str = "mean") -> Target:
    return Target(f"{_rate(metric.series('_sum'), matchers)} / {_rate(metric.series('_count'), matchers)}", legend)


def _calls(metric: Metric, matchers: list[str], by: tuple[str, ...] = (), legend: str = "") -> Target:
    """The rate of a histogram's observations (its `_count`): requests or calls per second."""
    return Target(_rate(metric.series("_count"), matchers, by), legend)


def rows(filters: list[str]) -> list[Row]:
    """The dashboard's rows; `filters` are the label matchers every query carries."""
    ok, actor = ['outcome="ok"', *filters], [ACTOR_FILTER, *filters]
    return [
        Row("Ingest", [
            Panel("Envelopes by result", "Envelopes per second: accepted, duplicate, or the rejection reason.", "short",
                  [_total(names.INGEST_ENVELOPES, filters, ("result",), "{{result}}")], stack=True),
            Panel("Ingest request latency", "Time to answer an ingest request (single or batch), durable write included.", "s",
                  _quantiles(names.INGEST_REQUEST_SECONDS, filters, ("endpoint",), " {{endpoint}}")),
            Panel("Ingest requests by endpoint", "Ingest requests per second, single envelopes and batches.", "reqps",
                  [_calls(names.INGEST_REQUEST_SECONDS, filters, ("endpoint",), "{{endpoint}}")], stack=True),
        ]),
        Row("Embed", [
            Panel("Embed requests by outcome", "Embed requests per second: ok, bad_request, not_ready, rate_limited, error, hung_up.", "reqps",
                  [_total(names.EMBED_REQUESTS, filters, ("outcome",), "{{outcome}}")], stack=True),
            Panel("Embed request latency", "Time to answer an embed request that succeeded.", "s", _quantiles(names.EMBED_REQUEST_SECONDS, ok)),
            Panel("Texts embedded and truncated", "Texts embedded per second, and those cut to the model's input limit first.", "short",
                  [_total(names.EMBED_TEXTS, filters, legend="embedded"), _total(names.EMBED_TRUNCATED_INPUTS, filters, legend="truncated")]),
            Panel("Embed batch size", "Texts per Serve batch (@serve.batch): quantiles and mean.", "short",
                  [*_quantiles(names.EMBED_BATCH_SIZE, filters), _mean(names.EMBED_BATCH_SIZE, filters)]),
        ]),
        Row("Generate front", [
            Panel("Generate requests by endpoint and outcome", "OpenAI-compatible requests per second; hung_up: the client went away.", "reqps",
                  [_total(names.GENERATE_REQUESTS, filters, ("endpoint", "outcome"), "{{endpoint}} {{outcome}}")], stack=True),
            Panel("Generate request latency", "Time to answer a request that succeeded, by endpoint (a stream: until its first event).", "s",
                  _quantiles(names.GENERATE_REQUEST_SECONDS, ok, ("endpoint",), " {{endpoint}}")),
            Panel("Completion tokens", "Completion tokens per second the generate front served.", "short",
                  [_total(names.GENERATE_COMPLETION_TOKENS, filters, legend="tokens/s")]),
            Panel("Streams hung up", "Streamed answers per second whose client went away before their end.", "short",
                  [_total(names.GENERATE_STREAMS_HUNG_UP, filters, legend="streams/s")]),
        ]),
        Row("Generation actors", [
            Panel("Engine call latency by actor", "Seconds per engine call of each generation actor.", "s",
                  _quantiles(names.GENERATION_LATENCY, actor, ("actor",), " actor {{actor}}")),
            Panel("Generated tokens by actor", "Tokens per second each actor's engine generated.", "short",
                  [_total(names.GENERATED_TOKENS, actor, ("actor", "engine"), "actor {{actor}} ({{engine}})")], stack=True),
            Panel("Tokens per second of an engine call", "The speed of single engine calls (tokens / seconds of the call), by actor.", "short",
                  _quantiles(names.GENERATION_TOKENS_PER_S, actor, ("actor",), " actor {{actor}}")),
            Panel("Engine calls by actor", "Engine calls per second of each actor.", "short",
                  [_calls(names.GENERATION_LATENCY, actor, ("actor",), "actor {{actor}}")], stack=True),
            Panel("Parse and sandbox failures", "Loop steps per second whose output was malformed (parse), and actions the sandbox "
                  "refused, failed or timed out on (sandbox), by actor.", "short",
                  [_total(names.PARSE_FAILURES, actor, ("actor",), "parse actor {{actor}}"),
                   _total(names.SANDBOX_FAILURES, actor, ("actor",), "sandbox actor {{actor}}")]),
        ]),
    ]


def global_filters() -> list[str]:
    """The standard filters, then those of RAY_GRAFANA_TRAJFORGE_DASHBOARD_GLOBAL_FILTERS (comma-separated, e.g. `namespace="prod"`)."""
    extra = [item.strip() for item in os.environ.get(GLOBAL_FILTERS_ENV, "").split(",") if item.strip()]
    return [*STANDARD_FILTERS, *extra]


def build_dashboard(filters: list[str] | None = None) -> dict:
    """The dashboard as Grafana's JSON model."""
    from trajforge import __version__

    filters = global_filters() if filters is None else filters
    panels, y, next_id = [], 0, 1
    for row in rows(filters):
        panels.append({"collapsed": False, "gridPos": {"h": 1, "w": ROW_WIDTH, "x": 0, "y": y}, "id": next_id, "title": row.title,
                       "type": "row", "panels": []})
        y, next_id = y + 1, next_id + 1
        for index, panel in enumerate(row.panels):
            grid = {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": PANEL_WIDTH * (index % 2), "y": y + PANEL_HEIGHT * (index // 2)}
            panels.append(_graph(panel, next_id, grid))
            next_id += 1
        y += PANEL_HEIGHT * -(-len(row.panels) // 2)
    return {
        "annotations": {"list": [{"builtIn": 1, "datasource": "-- Grafana --", "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "description": "trajforge's own metrics (ray.util.metrics): ingest, embed, the generate front and the generation actors.",
        "editable": True, "gnetId": None, "graphTooltip": 1, "links": [], "panels": panels, "refresh": False, "schemaVersion": 27,
        "style": "dark", "tags": ["trajforge", f"trajforgeVersion:{__version__}"], "templating": {"list": _variables(filters)},
        "time": {"from": "now-30m", "to": "now"}, "timepicker": {}, "timezone": "", "title": TITLE, "uid": UID, "version": 1,
    }


def _graph(panel: Panel, panel_id: int, grid: dict) -> dict:
    """Ray's graph panel (its GRAPH_PANEL_TEMPLATE, as its factory fills it in)."""
    from ray.dashboard.modules.metrics.dashboards.common import GRAPH_PANEL_TEMPLATE

    graph = copy.deepcopy(GRAPH_PANEL_TEMPLATE)
    graph.update({"title": panel.title, "description": panel.description, "id": panel_id, "gridPos": grid, "datasource": "${datasource}",
                  "fill": 10 if panel.stack else 0, "stack": panel.stack, "linewidth": 1 if panel.stack else 2,
                  "targets": [{"exemplar": True, "expr": target.expr, "interval": "", "legendFormat": target.legend, "refId": chr(ord("A") + i)}
                              for i, target in enumerate(panel.targets)]})
    if panel.stack:
        graph["nullPointMode"] = "connected"
    graph["yaxes"][0]["format"] = panel.unit
    graph.setdefault("fieldConfig", {}).setdefault("defaults", {})["unit"] = panel.unit
    return graph


def _variables(filters: list[str]) -> list[dict]:
    """Ray's datasource, SessionName and Cluster variables (as in its default dashboard), and the generation actors' Actor."""
    def query(name: str, label: str, metric: str, matchers: list[str], description: str, **extra) -> dict:
        definition = f"label_values({metric}{{{','.join(matchers)}}}, {label})"  # `{}` when there are none, as Ray's
        return {"allValue": ".+", "current": {"selected": False}, "datasource": "${datasource}", "definition": definition,
                "description": description, "error": None, "hide": 0, "includeAll": True, "label": None, "multi": False, "name": name,
                "options": [], "query": {"query": definition, "refId": "StandardVariableQuery"}, "refresh": 1, "regex": "",
                "skipUrlSync": False, "sort": 2, "tagValuesQuery": "", "tags": [], "tagsQuery": "", "type": "query", "useTags": False, **extra}

    others = [f for f in filters if f not in STANDARD_FILTERS]  # as Ray's: only the extra global filters, none that is a variable
    node_metric = "ray_node_network_receive_speed"
    return [
        {"current": {"selected": False}, "description": "Filter queries of a specific Prometheus type.", "hide": 2, "includeAll": False,
         "multi": False, "name": "datasource", "options": [], "query": "prometheus", "refresh": 1, "regex": "", "skipUrlSync": False,
         "type": "datasource"},
        query("SessionName", "SessionName", node_metric, others, "Filter queries to specific Ray sessions."),
        query("Cluster", "ray_io_cluster", node_metric, others, "Filter queries to specific Ray clusters for KubeRay (the ray_io_cluster label).",
              allValue=".*"),
        query("Actor", "actor", names.GENERATED_TOKENS.series("_total"), filters,
              "Filter the generation actors' panels to some actors (by index).", allValue=".*", multi=True,
              current={"selected": True, "text": ["All"], "value": ["$__all"]}, sort=3),
    ]
