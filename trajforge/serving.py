"""Deploying the Serve applications of a Serve config file on a local or remote Ray cluster."""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
from collections.abc import Iterable

import httpx

from trajforge.cluster import check_reachable
from trajforge.errors import ServeStartError
from trajforge.settings import ENV_PREFIX
from trajforge.settings.serve_file import ServeFile

log = logging.getLogger(__name__)

# Ray Serve's direct ingress: every application's replicas also answer HTTP on a port of their own
# (30000 and up), so a client can skip the Python proxy. Read by the Serve controller and replicas at
# start, so it must be in the environment Ray starts with. Serve keeps a stopping direct-ingress
# replica open 30 s for load balancers to notice; for clients that talk to replicas, 2 s is enough.
WILDCARD_HOSTS = ("0.0.0.0", "::")
DIRECT_INGRESS_ENV = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
DEPLOYED: list[str] = []
"""The applications `deploy` has (begun to) run from this process: all that `shutdown` may delete on a joined cluster."""


def _builder(import_path: str):
    module_name, _, attribute = import_path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def deploy(serve_file: ServeFile, address: str | None = None, health_timeout_s: float = 180.0, direct_ingress: bool = False) -> str:
    """Start (or join) Ray, start Serve, run every application; returns the base URL once /health answers.

    `direct_ingress` turns on Serve's direct ingress in the Ray this starts (see `direct_endpoints`);
    a cluster joined with `address` must have been started with `DIRECT_INGRESS_ENV` instead."""
    import ray
    from ray import serve

    # Build first: a bad config fails here, before a cluster is started. The applications' TRAJFORGE__
    # variables are already folded into their args (below --set); hide them so builders do not apply
    # them twice. Others (TRAJFORGE__ACTORS__... for the actors the generate front starts) stay.
    prefixes = tuple(f"{ENV_PREFIX}{app.name.upper()}__" for app in serve_file.applications)
    overrides = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith(prefixes)}
    try:
        applications = [(app, _builder(app.import_path)(app.args)) for app in serve_file.applications]
    finally:
        os.environ.update(overrides)
    if direct_ingress:
        for name, value in DIRECT_INGRESS_ENV.items():
            os.environ.setdefault(name, value)
    if not ray.is_initialized():
        connect(address)
    http = serve_file.http_options
    check_running_serve(http.host, http.port, [app.name for app in serve_file.applications])
    serve.start(
        proxy_location=serve_file.proxy_location,
        http_options={"host": http.host, "port": http.port, "request_timeout_s": http.request_timeout_s, "keep_alive_timeout_s": http.keep_alive_timeout_s},
    )
    for app, built in applications:
        log.info("deploying %s at %s", app.name, app.route_prefix)
        DEPLOYED.append(app.name)
        try:
            serve.run(built, name=app.name, route_prefix=app.route_prefix)
        except RuntimeError as exc:
            raise ServeStartError(f"application {app.name!r} did not start: {failure_reason(app.name) or exc}") from None
    host = "127.0.0.1" if http.host in WILDCARD_HOSTS else http.host
    url = f"http://{host}:{http.port}"
    wait_healthy(url, health_timeout_s)
    return url


def connect(address: str | None) -> None:
    """`ray.init` on `address` (None: $RAY_ADDRESS, else a cluster running on this machine, else a new local Ray), failing in one line."""
    import ray

    check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError as exc:  # `auto` with no cluster on this machine
        raise ServeStartError(f"{exc} (start one with `ray start --head`)") from None


def check_running_serve(host: str, port: int, app_names: list[str]) -> None:
    """When Serve already runs on the cluster (an earlier `trajforge serve`, `serve deploy`), it keeps its HTTP options:
    refuse another host or port before anything is deployed (the applications would answer elsewhere than printed), and
    say which of these applications replace running ones (stopping this command then removes them)."""
    from ray import serve
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:  # no Serve on this cluster yet: its proxy must be able to bind the port
        check_port_free(host, port)
        return
    running = client.http_config
    if (running.host, running.port) != (host, port):
        raise ServeStartError(
            f"Serve already runs on this Ray cluster with its HTTP proxy on {running.host}:{running.port}, and keeps that while it "
            f"runs, so {host}:{port} cannot be used: leave out --host/--port (or set them to {running.host} and {running.port}), "
            "or stop Serve first with `serve shutdown` (it removes every application on the cluster)")
    replaced = sorted(set(app_names) & set(serve.status().applications))
    if replaced:
        log.warning("replacing the running application(s) %s on this cluster; stopping this command removes them",
                    ", ".join(replaced))


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something else already listens on (another Ray cluster's Serve, any server): Serve's proxy would fail
    to bind it and this command would talk to whatever answers there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServeStartError(
                f"{host}:{port} is already in use ({exc.strerror}), by a process outside this Ray cluster (another cluster's "
                f"Serve, started with `ray start --head`, or any server): pass another --port, stop what listens there "
                f"(`ss -ltnp 'sport = :{port}'` names it), or join that cluster with --address instead of starting a new Ray") from None


def failure_reason(app_name: str) -> str | None:
    """What Serve recorded about an application's failed deployments: the last line of their replicas' error."""
    from ray import serve

    try:
        overview = serve.status().applications.get(app_name)
    except Exception:  # the controller itself is gone
        return None
    if overview is None:
        return None
    messages = [deployment.message for deployment in overview.deployments.values() if deployment.message] or [overview.message]
    lines = [line.strip() for message in messages if message for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def direct_endpoints(host: str, proxy_port: int) -> dict[str, list[str]]:
    """Application name -> the base URLs of its replicas' own HTTP servers; empty without direct ingress.

    Asks the Serve controller for its target groups (what Serve's HAProxy integration reads): with
    direct ingress on they name the replicas' ports, without it only the proxy's, which are left out.
    Replicas bind the proxy's `host`; only a wildcard host makes them reachable at their node's IP."""
    import ray
    from ray.serve.context import _get_global_client

    try:
        groups = ray.get(_get_global_client()._controller.get_target_groups.remote())
    except (AttributeError, ray.exceptions.RayError) as exc:
        log.warning("could not ask Serve for the replicas' own ports (%s); use the proxy URL, or a Ray version whose "
                    "Serve controller has get_target_groups (2.50 and later)", exc)
        return {}
    endpoints: dict[str, list[str]] = {}
    for group in groups:
        if str(getattr(group.protocol, "value", group.protocol)).upper() != "HTTP":
            continue
        urls = [f"http://{target.ip if host in WILDCARD_HOSTS else host}:{target.port}" for target in group.targets if target.port != proxy_port]
        if urls and group.app_name:
            endpoints[group.app_name] = sorted(urls)
    return endpoints


def wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
            last_error = "non-200 answer"
        except httpx.HTTPError as exc:
            last_error = str(exc)
        time.sleep(0.25)
    raise TimeoutError(f"{url}/health did not answer 200 within {timeout_s:.0f} s ({last_error}); see the Ray logs under /tmp/ray/session_latest/logs")


def shutdown(app_names: Iterable[str] = ()) -> None:
    """Stop what this process started. A Ray it started itself goes with everything on it, Serve included
    (`ray.shutdown`; `serve.shutdown` would add nothing but a log line from the killed controller). On a
    cluster it joined (`--address`), only its own applications are deleted: Serve and other people's
    applications there keep running."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    if not started_ray_here():
        for name in app_names:
            serve.delete(name)
    ray.shutdown()


def remove(address: str | None, app_names: list[str]) -> list[str]:
    """Delete those of `app_names` that run on the cluster at `address` (what `--detach` left); returns the names deleted."""
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client

    connect(address)
    try:
        if _get_global_client(raise_if_no_controller_running=False) is None:
            return []
        running = set(serve.status().applications)
        removed = [name for name in app_names if name in running]
        for name in removed:
            serve.delete(name)
        return removed
    finally:
        ray.shutdown()


def disconnect() -> None:
    """Leave the cluster with everything deployed still running (`trajforge serve --detach`)."""
    import ray

    ray.shutdown()


def cluster_address() -> str:
    """The GCS address of the Ray this process is connected to (what `ray start` printed)."""
    import ray

    return ray.get_runtime_context().gcs_address


def started_ray_here() -> bool:
    """Whether this process started the Ray it is connected to (rather than joining a running cluster)."""
    import ray

    return bool(getattr(getattr(ray._private.worker, "_global_node", None), "head", False))
