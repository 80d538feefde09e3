"""`trajforge dashboard`: the Grafana dashboard of trajforge's own metrics (trajforge.grafana_dashboard), printed,
written to a file, or installed beside Ray's dashboards in the Grafana provisioning of the Ray session on this node."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from trajforge.cli.common import add_examples

EPILOG = """\
The dashboard (title and uid "trajforge") charts the metrics trajforge exports through ray.util.metrics:
ingest envelopes by result and request latency; embed requests by outcome, latency, texts, truncations
and batch sizes; the generate front's requests by endpoint and outcome, latency, completion tokens and
hung-up streams; the generation actors' call latency, tokens/s and parse and sandbox failures, by actor.
Its queries use the names Prometheus sees (ray_trajforge_*_total, *_bucket) and the variables of Ray's
own dashboards ($datasource, $SessionName, $Cluster); RAY_GRAFANA_TRAJFORGE_DASHBOARD_GLOBAL_FILTERS
(comma-separated label matchers, e.g. namespace="prod") adds filters to every query, as Ray's own
RAY_GRAFANA_<NAME>_DASHBOARD_GLOBAL_FILTERS do.

--install writes trajforge_grafana_dashboard.json into the folder that Ray's Grafana provisioning names
(<temp dir>/session_latest/metrics/grafana/provisioning/dashboards/default.yml: Ray's dashboards folder,
<session>/metrics/grafana/dashboards), which Ray writes when it starts with its dashboard, on the head
node. Grafana started with Ray's config
  grafana-server --config <temp dir>/session_latest/metrics/grafana/grafana.ini web
shows it in the "Ray" folder (a Grafana already running picks it up within its provisioning interval).
Each `ray start` makes a new session folder: install again after it. For another Grafana, write the
file with --out and import it (Dashboards > New > Import).
Exit status: 0 when printed, written or installed; 2 when there is no Ray session with the dashboard
to install into (start Ray with the dashboard, or use --out)."""


EXAMPLES = """\
  trajforge dashboard --out trajforge.json
  trajforge dashboard --install
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, metavar="FILE", help="write the dashboard's JSON to FILE instead of printing it")
    where.add_argument("--install", action="store_true",
                       help="write it into the Grafana dashboards folder of the Ray session on this node (see below)")
    parser.add_argument("--temp-dir", type=Path, metavar="DIR",
                        help="with --install: the --temp-dir Ray was started with (default: Ray's, $RAY_TMPDIR/ray or /tmp/ray)")
    add_examples(parser, EXAMPLES)


def run_command(args: argparse.Namespace) -> int:
    from trajforge.errors import ConfigError
    from trajforge.grafana_dashboard import FILE_NAME, build_dashboard

    if args.temp_dir is not None and not args.install:
        raise ConfigError("--temp-dir says where Ray's session is, for --install; give --install too")
    folder = ray_dashboards_folder(args.temp_dir) if args.install else None
    text = json.dumps(build_dashboard(), indent=2) + "\n"
    if folder is not None:
        path = _write(folder / FILE_NAME, text, "run it as the user Ray runs as, or write the file with --out and import it in Grafana")
        print(f"installed {path}: Grafana started with Ray's grafana.ini shows it as \"trajforge\" in the Ray folder", file=sys.stderr)
    elif args.out is not None:
        _write(args.out, text, "give --out a file in a folder you can write")
        print(f"wrote {args.out}: import it in Grafana (Dashboards > New > Import)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _write(path: Path, text: str, advice: str) -> Path:
    """write_atomic, with an OSError (a read-only folder, a path that is a folder) as one line that names the path."""
    from trajforge.atomic import write_atomic
    from trajforge.errors import TrajforgeError

    if not Path(path).name:  # `.`, `/`, an empty --out: a folder by its very name, with no file name to write beside
        raise TrajforgeError(f"cannot write {path} (Is a directory): {advice}")
    try:
        return write_atomic(path, text)
    except OSError as exc:
        raise TrajforgeError(f"cannot write {path} ({exc.strerror or type(exc).__name__}): {advice}") from None


def default_ray_temp_dir() -> Path:
    """Ray's default --temp-dir (ray._common.utils.get_default_ray_temp_dir, without importing Ray)."""
    if "RAY_TMPDIR" in os.environ:
        return Path(os.environ["RAY_TMPDIR"]) / "ray"
    if sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        return Path(os.environ["TMPDIR"]) / "ray"
    return Path("/tmp/ray")


def ray_dashboards_folder(temp_dir: Path | None = None) -> Path:
    """The folder of Ray's Grafana dashboards in the latest session under `temp_dir`, as its Grafana provisioning names it
    (Ray's MetricsHead writes it; RAY_METRICS_OUTPUT_ROOT moves it, as it does for Ray). NoRaySession when there is none."""
    import yaml

    from trajforge.errors import NoRaySession

    temp_dir = temp_dir or default_ray_temp_dir()
    metrics_root = Path(os.environ.get("RAY_METRICS_OUTPUT_ROOT") or temp_dir / "session_latest" / "metrics")
    provisioning = metrics_root / "grafana" / "provisioning" / "dashboards" / "default.yml"
    advice = ("start Ray with its dashboard (`ray start --head --include-dashboard true`, on this node, with --temp-dir here if Ray "
              "has one), or write the file with --out and import it in Grafana")
    try:
        providers = (yaml.safe_load(provisioning.read_text()) or {}).get("providers") or []
        folder = next(Path(p["options"]["path"]) for p in providers if isinstance(p, dict) and (p.get("options") or {}).get("path"))
    except FileNotFoundError:
        raise NoRaySession(f"no Grafana provisioning of a Ray session with the dashboard at {provisioning}: {advice}") from None
    except (OSError, yaml.YAMLError, AttributeError, StopIteration) as exc:
        raise NoRaySession(f"{provisioning} names no dashboards folder ({type(exc).__name__}): {advice}") from None
    if not folder.is_dir():
        raise NoRaySession(f"the dashboards folder {folder} that {provisioning} names is missing (a session that is gone?): {advice}")
    return folder
