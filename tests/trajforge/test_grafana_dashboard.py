"""trajforge's Grafana dashboard: Grafana's shape, as Ray lays out its own dashboards; every query reads a metric the code
defines (trajforge.metric_names), by labels it has, and every metric is charted; `trajforge dashboard` prints the JSON,
writes it (--out) and installs it (--install) into a temp dir laid out as Ray lays out a session started with its
dashboard, and says what to do when there is none. No Ray runs here: the queries meet Ray's real exports in
tests/actors/test_metrics.py, tests/serve_apps/test_embed_metrics.py, test_ingest_metrics.py and
tests/actors/test_openai_front_metrics.py."""

from __future__ import annotations

import configparser
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from ray_metrics import dashboard_queries, matchers, queried_series, record_metrics

from trajforge import metric_names as names
from trajforge.cli.main import main
from trajforge.grafana_dashboard import FILE_NAME, GLOBAL_FILTERS_ENV, STANDARD_FILTERS, build_dashboard

RAY_LABELS = {"SessionName", "ray_io_cluster"}  # the labels of the standard filters, on every series Ray exports
RAY_NODE_METRIC = "ray_node_network_receive_speed"  # Ray's own, that its dashboards' SessionName and Cluster variables read


@pytest.fixture(autouse=True)
def no_ray_settings(monkeypatch):
    for variable in ("RAY_METRICS_OUTPUT_ROOT", GLOBAL_FILTERS_ENV):
        monkeypatch.delenv(variable, raising=False)


def test_the_dashboard_has_grafanas_shape_and_rays_layout():
    dashboard = build_dashboard()
    assert (dashboard["uid"], dashboard["title"], dashboard["schemaVersion"]) == ("trajforge", "trajforge", 27)
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    assert [panel["title"] for panel in panels if panel["type"] == "row"] == ["Ingest", "Embed", "Generate front", "Generation actors"]
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert grid["x"] + grid["w"] <= 24 and not cells & taken, panel["title"]  # inside the 24 columns, overlapping none
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["type"] == "graph" and panel["datasource"] == "${datasource}" and panel["description"]
        assert [target["refId"] for target in panel["targets"]] == [chr(ord("A") + i) for i in range(len(panel["targets"]))]
        for target in panel["targets"]:
            expr = target["expr"]
            assert target["legendFormat"] and expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
            assert all(expr.count(f) == expr.count("rate(") for f in STANDARD_FILTERS), expr  # each series filtered as Ray's are


def test_it_sits_beside_rays_own_dashboards():
    """The keys of Ray's dashboards and graph panels, and its datasource, SessionName and Cluster variables, as Ray generates them."""
    from ray.dashboard.modules.metrics.grafana_dashboard_factory import generate_default_grafana_dashboard

    content, ray_uid = generate_default_grafana_dashboard()
    ray, ours = json.loads(content), build_dashboard()
    assert ray_uid != ours["uid"] and set(ray) - set(ours) <= {"rayMeta", "iteration"}
    ray_graph = next(panel for panel in ray["panels"] if panel["type"] == "graph")
    assert all(set(ray_graph) <= set(panel) for panel in ours["panels"] if panel["type"] == "graph")
    ray_variables = {variable["name"]: variable for variable in ray["templating"]["list"]}
    for variable in ours["templating"]["list"]:
        if variable["name"] in ray_variables:
            theirs = ray_variables[variable["name"]]
            assert {key: variable.get(key) for key in theirs if key != "description"} == {key: theirs[key] for key in theirs if key != "description"}


def test_every_query_reads_a_metric_the_code_defines_by_labels_it_has():
    for expr in dashboard_queries(build_dashboard()):
        series = queried_series(expr)
        assert series and all(names.by_series(name) for name in series - {RAY_NODE_METRIC}), expr
        for name, label in matchers(expr):
            metric = names.by_series(name)
            if metric is not None:
                assert label in {*metric.tags, *RAY_LABELS, *(["le"] if name.endswith("_bucket") else [])}, (label, expr)
        assert len(re.findall(r"\brate\(\w+(\{[^}]*\})?\[5m\]\)", expr)) == expr.count("rate("), expr  # a rate is of a series over Ray's window
        for quantile in re.findall(r"histogram_quantile\((.*)", expr):
            assert re.match(r"0\.\d+, sum\(rate\(\w+_bucket\{[^}]*\}\[5m\]\)\) by \(le\b", quantile), expr


def test_every_metric_the_code_defines_is_charted_and_each_histogram_as_quantiles():
    queries = dashboard_queries(build_dashboard())
    read = {names.by_series(name) for expr in queries for name in queried_series(expr)}
    assert set(names.ALL) <= read
    quantiles = {names.by_series(name) for expr in queries if "histogram_quantile" in expr for name in queried_series(expr)}
    assert {metric for metric in names.ALL if metric.kind == "histogram"} <= quantiles


def test_the_code_makes_the_metrics_of_the_registry_with_their_kind_and_tags(monkeypatch):
    from actors.actor import _Metrics
    from serve_apps.embed.metrics import EmbedMetrics
    from serve_apps.generate.metrics import GenerateMetrics
    from serve_apps.ingest.metrics import IngestMetrics

    made = record_metrics(monkeypatch)
    IngestMetrics(), EmbedMetrics(), GenerateMetrics(), _Metrics({})
    assert {(metric.name, metric.kind, tuple(metric.tag_keys or ())) for metric in made.values()} == {
        (metric.name, metric.kind, metric.tags) for metric in names.ALL}


def test_no_other_module_makes_ray_metrics():
    """The modules the test above builds are all those that import `ray.util.metrics` (a new one joins it, and the registry)."""
    root = Path(__file__).resolve().parents[2]
    makers = {str(path.relative_to(root)) for folder in ("actors", "learner", "pipelines", "sandbox", "serve_apps", "trajforge")
              for path in (root / folder).rglob("*.py") if re.search(r"^\s*(from ray\.util\.metrics import|from ray\.util import metrics|import ray\.util\.metrics)", path.read_text(), re.M)}
    assert makers == {"actors/actor.py", "serve_apps/ingest/metrics.py", "serve_apps/embed/metrics.py", "serve_apps/generate/metrics.py",
                      "serve_apps/request_metrics.py"}


def test_a_series_name_maps_back_to_its_metric_by_its_kinds_suffixes():
    assert names.by_series("ray_trajforge_embed_requests_total") is names.EMBED_REQUESTS
    assert names.by_series("ray_trajforge_embed_batch_size_sum") is names.EMBED_BATCH_SIZE
    assert names.by_series("ray_trajforge_embed_requests_bucket") is None and names.by_series("trajforge_embed_requests_total") is None
    with pytest.raises(ValueError, match="counter: its series end in _total"):
        names.EMBED_REQUESTS.series("_count")


def test_global_filters_from_the_environment_reach_every_query(monkeypatch):
    monkeypatch.setenv(GLOBAL_FILTERS_ENV, 'namespace="prod", team=~"data.*"')
    for expr in dashboard_queries(build_dashboard()):
        if "rate(" in expr:
            assert expr.count('namespace="prod"') == expr.count("rate(") == expr.count('team=~"data.*"'), expr
        else:
            assert 'namespace="prod",team=~"data.*"' in expr, expr


def ray_session(temp_dir: Path) -> Path:
    """`temp_dir` laid out as Ray's MetricsHead lays out a session started with the dashboard (its own templates): the
    dashboards folder, grafana.ini pointing at session_latest's provisioning, whose dashboards/default.yml names the folder."""
    from ray.dashboard.modules.metrics.templates import DASHBOARD_PROVISIONING_TEMPLATE, GRAFANA_INI_TEMPLATE

    grafana = temp_dir / "session_2026-12-06_10-00-00_000000_1" / "metrics" / "grafana"
    (grafana / "dashboards").mkdir(parents=True)
    (grafana / "provisioning" / "dashboards").mkdir(parents=True)
    (grafana / "dashboards" / "default_grafana_dashboard.json").write_text("{}")
    (grafana / "provisioning" / "dashboards" / "default.yml").write_text(DASHBOARD_PROVISIONING_TEMPLATE.format(dashboard_output_folder=grafana / "dashboards"))
    (temp_dir / "session_latest").symlink_to(grafana.parents[1])
    (grafana / "grafana.ini").write_text(GRAFANA_INI_TEMPLATE.format(grafana_provisioning_folder=temp_dir / "session_latest/metrics/grafana/provisioning"))
    return grafana / "dashboards"


def grafanas_dashboards_folder(temp_dir: Path) -> Path:
    """The folder Grafana reads when started with `--config <temp dir>/session_latest/metrics/grafana/grafana.ini`."""
    ini = configparser.ConfigParser()
    ini.read(temp_dir / "session_latest" / "metrics" / "grafana" / "grafana.ini")
    provider = yaml.safe_load((Path(ini["paths"]["provisioning"]) / "dashboards" / "default.yml").read_text())["providers"][0]
    return Path(provider["options"]["path"])


def test_the_command_prints_the_json_and_writes_it_with_out(capsys, tmp_path):
    assert main(["dashboard"]) == 0
    assert json.loads(capsys.readouterr().out) == build_dashboard()
    out = tmp_path / "dash" / "trajforge.json"
    assert main(["dashboard", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == build_dashboard() and capsys.readouterr().out == ""


@pytest.mark.parametrize("where", ["a folder", "under a file", "read-only"])
def test_a_path_it_cannot_write_is_one_line_naming_it(where, capsys, tmp_path, monkeypatch):
    """--out to a folder, under a file or into a read-only folder (and --install into one): exit 2, not an OSError traceback."""
    (tmp_path / "file").write_text("")
    (tmp_path / "folder").mkdir()
    out = {"a folder": tmp_path / "folder", "under a file": tmp_path / "file" / "dash.json", "read-only": tmp_path / "ro" / "dash.json"}[where]
    if where == "read-only":
        from trajforge import atomic

        def refuse(path, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(atomic.Path, "write_bytes", refuse)  # as a folder this user cannot write (root writes anywhere)
    assert main(["dashboard", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"trajforge dashboard: cannot write {out} (") and "--out" in error
    assert not [path for path in tmp_path.rglob(".*.tmp")]  # no temporary file left behind
    if where == "read-only":
        temp_dir = tmp_path / "ray"
        ray_session(temp_dir)
        assert main(["dashboard", "--install", "--temp-dir", str(temp_dir)]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "cannot write" in error and FILE_NAME in error and "--out" in error


@pytest.mark.parametrize("how", ["--temp-dir", "RAY_TMPDIR"])
def test_install_writes_it_where_grafana_started_with_rays_config_reads(how, capsys, tmp_path, monkeypatch):
    temp_dir = tmp_path / "ray"
    folder = ray_session(temp_dir)
    if how == "RAY_TMPDIR":
        monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert main(["dashboard", "--install", *(["--temp-dir", str(temp_dir)] if how == "--temp-dir" else [])]) == 0
    assert grafanas_dashboards_folder(temp_dir) == folder
    assert json.loads((folder / FILE_NAME).read_text()) == build_dashboard()
    assert sorted(path.name for path in folder.iterdir()) == ["default_grafana_dashboard.json", FILE_NAME]
    assert str(folder / FILE_NAME) in capsys.readouterr().err


def test_without_a_ray_session_with_the_dashboard_it_says_what_to_do_in_one_line(capsys, tmp_path):
    assert main(["dashboard", "--install", "--temp-dir", str(tmp_path / "ray")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "start Ray with its dashboard" in error and "--out" in error
    assert str(tmp_path / "ray" / "session_latest" / "metrics" / "grafana") in error
    folder = ray_session(tmp_path / "ray")
    shutil.rmtree(folder)  # a session that is gone, or one whose folder was removed
    assert main(["dashboard", "--install", "--temp-dir", str(tmp_path / "ray")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"the dashboards folder {folder}" in error and not folder.exists()


def test_temp_dir_goes_with_install(capsys, tmp_path):
    assert main(["dashboard", "--temp-dir", str(tmp_path)]) == 2
    assert "give --install too" in capsys.readouterr().err


@pytest.mark.parametrize("environment", [{}, {"TMPDIR": "/var/tmpx"}, {"RAY_TMPDIR": "/scratch", "TMPDIR": "/var/tmpx"}])
def test_the_default_temp_dir_is_rays(environment, monkeypatch):
    from ray._common.utils import get_default_ray_temp_dir

    from trajforge.cli.dashboard_cmd import default_ray_temp_dir

    for variable in ("RAY_TMPDIR", "TMPDIR"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    assert default_ray_temp_dir() == Path(get_default_ray_temp_dir())
