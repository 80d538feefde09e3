"""`trajforge serve`: start (or join) Ray, deploy the Serve applications, print the URL, stop on Ctrl-C/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path

from trajforge.cli.common import add_examples, nonblank
from trajforge.cluster import ray_to_join
from trajforge.errors import ConfigError, ServeStartError
from trajforge.settings import SHIPPED_CONFIGS, Assignment, parse_assignment
from trajforge.settings.serve_file import ServeFile, load_serve_file, override_roots

log = logging.getLogger(__name__)
PORT_ENV = "GROOVE_CENTRAL_PORT"  # the specification's port variable; the Node server listens on 8443 by default


EXAMPLES = """\
  trajforge serve                                   # ingest, embed and generate on http://127.0.0.1:8000 until Ctrl-C
  trajforge serve --port 8443 --lake /data/lake --apps ingest,embed
  trajforge serve --set ingest.rate_limits.per_address_per_minute=0
  trajforge serve --host 0.0.0.0 --detach           # onto a running cluster (`ray start --head`); --stop removes them
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="Serve config file (default: configs/serve.yaml)")
    parser.add_argument("--host", help="address to bind (default from the config: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default: $GROOVE_CENTRAL_PORT, the Central Command's variable, else the config's 8000)")
    parser.add_argument("--lake", type=nonblank, help="lake root for every application that has one (default ./lake)")
    parser.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS only, with this certificate (chain) and --tls-key (seed 003: TLS "
                                                          "required); a key password from $TRAJFORGE_TLS_KEY_PASSWORD")
    parser.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    parser.add_argument("--apps", help="comma-separated applications of the config to deploy (default: all of them: ingest,embed,generate)")
    parser.add_argument("--address", help="the Ray cluster to deploy onto (auto: the one `ray start --head` runs on this machine; "
                                          "HOST:6379; ray://head:10001). Default: $RAY_ADDRESS, else a cluster running on this "
                                          "machine, else a local Ray that this command starts and stops")
    leave = parser.add_mutually_exclusive_group()
    leave.add_argument("--detach", action="store_true",
                       help="on a running cluster (`ray start --head` first; refused where this command would start a Ray "
                            "of its own, as with RAY_ADDRESS=local), deploy, print the URLs and return, leaving the "
                            "applications running (`trajforge serve --stop` removes them). Without it the "
                            "command stays in the foreground, and Ctrl-C, SIGTERM or closing its terminal removes its applications "
                            "(and stops the Ray it started, if it started one)")
    leave.add_argument("--stop", action="store_true",
                       help="remove the config's applications (or those of --apps) from the running cluster, as left by "
                            "--detach or `serve deploy`; those a `trajforge serve` still running in the foreground deployed "
                            "are left to it (Ctrl-C there removes them). Serve and other applications keep running")
    parser.add_argument(
        "--direct-ingress", action="store_true",
        help="also let each application's replicas answer HTTP on ports of their own (Ray Serve's direct ingress, printed "
             "below the URLs), skipping Serve's Python proxy: on 2 cores 3-4x the single-envelope ingest and 1.5x the embed throughput. The proxy's URLs keep "
             "working. A cluster joined with --address must be started with RAY_SERVE_ENABLE_DIRECT_INGRESS=1 instead (and "
             "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=2, else removing an application waits 30 s for its replicas).",
    )
    add_examples(parser, EXAMPLES)


def config_path(given: Path | None) -> Path:
    """`--config`, else the checkout's configs/serve.yaml, as every command reads its file: a configs/serve.yaml in the
    folder the command runs in is not taken (it may be another project's Ray Serve config)."""
    return given if given is not None else SHIPPED_CONFIGS / "serve.yaml"


def config_roots(args: argparse.Namespace) -> list[str]:
    return override_roots(config_path(args.config))


def load(args: argparse.Namespace) -> ServeFile:
    """The Serve config with the variables, --set and the shortcut flags applied (flags win)."""
    path = config_path(args.config)
    assignments = [parse_assignment(text) for text in args.assignments]
    if args.host:
        assignments.append(Assignment("http_options.host", args.host, "--host"))
    if args.port is not None or os.environ.get(PORT_ENV):  # `--port 0` is refused by the config, not read as no --port
        given = args.port is not None
        assignments.append(Assignment("http_options.port", args.port if given else os.environ[PORT_ENV], "--port" if given else PORT_ENV))
    for flag, field in (("tls_cert", "ssl_certfile"), ("tls_key", "ssl_keyfile")):
        if getattr(args, flag, None):
            assignments.append(Assignment(f"http_options.{field}", getattr(args, flag), f"--{flag.replace('_', '-')}"))
    serve_file = load_serve_file(path, assignments)
    if args.lake:
        apps_with_lake = [app.name for app in serve_file.applications if "lake" in app.args]
        serve_file = load_serve_file(path, assignments + [Assignment(f"{name}.lake", args.lake, "--lake") for name in apps_with_lake])
    if getattr(args, "apps", None) is not None:
        names = [name.strip() for name in args.apps.split(",") if name.strip()]
        if not names:  # an empty --apps (an unset variable in a script) deployed every application
            known = ",".join(application.name for application in serve_file.applications)
            raise ConfigError(f"--apps {args.apps!r} names no application: give some of {known}, or leave --apps out for all of them")
        serve_file = serve_file.only(names)
    warn_runtime_env_not_applied(serve_file, path)
    return absolute_paths(serve_file, address=getattr(args, "address", None))


def warn_runtime_env_not_applied(serve_file: ServeFile, path: Path) -> None:
    """An application's `runtime_env` is Ray Serve's, applied by `serve run` and `serve deploy`, which build the
    applications in a task on the cluster; `trajforge serve` builds them in this process and runs them without it, so
    say so rather than let its variables (`TRAJFORGE__INGEST__NUM_REPLICAS`, `INGEST_API_KEYS`) go unread."""
    named = [application.name for application in serve_file.applications if application.runtime_env]
    if named:
        log.warning("%s: the runtime_env of %s is read by `serve run` and `serve deploy` only, not by `trajforge serve`: give "
                    "its TRAJFORGE__ variables to this command (or --set), and other variables to the environment the Ray "
                    "cluster starts with", path, ", ".join(named))


PATH_ARGS = ("lake", "key_file")
"""Application args that name a path; `model` is one only where a folder of that name is (else a name: small, packaged)."""


def absolute_paths(serve_file: ServeFile, cwd: Path | None = None, address: str | None = None) -> ServeFile:
    """The config with each application's relative paths made absolute against this command's folder. A replica
    resolves them against its own working folder, which on a `ray start --head` cluster is the folder `ray start`
    ran in: `./lake` would be a lake there, not the one in the folder `trajforge serve` ran in."""
    from trajforge.settings.job_paths import absolute_data_paths, names_local_folder

    applications = []
    for application in serve_file.applications:
        paths = {name: value for name, value in application.args.items() if isinstance(value, str)
                 and (name in PATH_ARGS or (name == "model" and names_local_folder(value, cwd=cwd)))}
        absolute = dict(absolute_data_paths(paths, "--lake /shared/lake", cwd=cwd, address=address))
        applications.append(application.model_copy(update={"args": {**application.args, **absolute}}))
    return serve_file.model_copy(update={"applications": applications})


def which_ray(address: str | None) -> str:
    """The first line `trajforge serve` prints: the Ray it joins or starts (before Ray's and Serve's own output)."""
    joined = ray_to_join(address)
    if joined is None:
        return "Ray: starting a local Ray for this command; it stops, with the applications, when this command does"
    if joined == "auto":
        return "Ray: joining the cluster that `ray start --head` runs on this machine"
    return f"Ray: joining the cluster at {joined}"


def run_command(args: argparse.Namespace) -> int:
    from trajforge import serving

    serve_file = load(args)
    if args.direct_ingress and serve_file.http_options.ssl_certfile:
        raise ServeStartError("--direct-ingress answers plain HTTP on the replicas' own ports, around the proxy's TLS: with "
                              "--tls-cert (or http_options.ssl_certfile) leave it off, or put a TLS terminator in front instead")
    address = args.address or ("auto" if args.detach or args.stop else None)
    if (args.detach or args.stop) and ray_to_join(address) is None:
        raise ServeStartError(serving.cluster_needed("--stop" if args.stop else "--detach"))
    if args.stop:
        print(which_ray(address), flush=True)
        return stop_detached(address, [app.name for app in serve_file.applications])
    if ray_to_join(address) is None:  # a Ray of its own, whose Serve nothing can hold the port for: refuse a taken one now,
        serving.check_port_free(serve_file.http_options.host, serve_file.http_options.port)  # not after Ray's ~40 s start
    return serve_until_stopped(args, serve_file, address)


def stop_detached(address: str | None, app_names: list[str]) -> int:
    """`--stop`: remove what --detach (or `serve deploy`) left, saying so before each (Serve drains it first)."""
    from trajforge import serving

    def stopping(name: str) -> None:
        print(f"stopping {name}: Serve drains its replicas first (with direct ingress up to 30 s)...", flush=True)

    removed, foreground = serving.remove(address, app_names, on_stopping=stopping)
    if removed:
        print(f"removed {', '.join(removed)}", flush=True)
    if foreground:
        print(f"left {', '.join(foreground)} running: a `trajforge serve` still running in the foreground deployed "
              "them; Ctrl-C or SIGTERM there removes them", flush=True)
    if not removed and not foreground:
        print("none of these applications runs on the cluster", flush=True)
    return 0


def serve_until_stopped(args: argparse.Namespace, serve_file: ServeFile, address: str | None) -> int:
    from trajforge import serving

    def stop(signum, frame):
        raise KeyboardInterrupt

    def stop_on_signals() -> None:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, stop)

    detached = False
    try:
        stop_on_signals()  # while the applications deploy too: SIGHUP's default ends the process, leaving them on a cluster
        url = serving.deploy(serve_file, address=address, direct_ingress=args.direct_ingress, detached=args.detach,
                             announce=lambda: print(which_ray(address), flush=True))
        stop_on_signals()  # again after ray.init, which installs a SIGTERM handler of its own
        direct = serving.direct_endpoints(serve_file.http_options.host, serve_file.http_options.port) if args.direct_ingress else {}
        joined = not serving.started_ray_here()
        print(f"trajforge is serving at {url} ({'on the Ray cluster at ' + serving.cluster_address() if joined else 'on a local Ray started by this command'})", flush=True)
        for app in serve_file.applications:
            route = app.route_prefix.rstrip("/")
            print(f"  {app.name:<8} {url}{route}/  ({app.import_path})", flush=True)
            for replica_url in direct.get(app.name, []):
                print(f"           direct: {replica_url}{route}/", flush=True)
        if args.direct_ingress and not direct:
            print("  direct ingress is off in this Ray cluster: start it with RAY_SERVE_ENABLE_DIRECT_INGRESS=1", flush=True)
        names = " ".join(app.name for app in serve_file.applications)
        if args.detach:
            detached = True
            print(f"Detached: {names} keep running on the cluster; `serve status` shows them, `trajforge serve --stop` removes them.", flush=True)
            return 0
        print("Ctrl-C or SIGTERM stops it." if not joined else
              f"Ctrl-C or SIGTERM removes these applications ({names}); the cluster and Serve keep running.", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        print("stopping...", flush=True)
    finally:
        if detached:
            serving.disconnect()
        else:
            serving.shutdown(serving.DEPLOYED)
    return 0
