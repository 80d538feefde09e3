"""Deploying the Serve applications of a Serve config file on a local or remote Ray cluster."""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping

import httpx

from trajforge import cluster
from trajforge.cluster import init_ray
from trajforge.errors import ConfigError, ServeStartError
from trajforge.settings import ENV_PREFIX
from trajforge.settings.serve_file import TLS_KEY_PASSWORD_ENV, ServeFile

log = logging.getLogger(__name__)

PROXY_HEADERS_ENV = {"FORWARDED_ALLOW_IPS": ""}
"""For a Ray started here: Serve's HTTP proxy (uvicorn) leaves X-Forwarded-For to the applications' trusted_proxies
(by default it applies the header itself for peers on this host, so a local client could pick its own address)."""
WILDCARD_HOSTS = ("0.0.0.0", "::")

# Ray Serve's direct ingress: every application's replicas also answer HTTP on a port of their own
# (30000 and up), so a client can skip the Python proxy. Read by the Serve controller and replicas at
# start, so it must be in the environment Ray starts with. Serve keeps a stopping direct-ingress
# replica open 30 s for load balancers to notice; for clients that talk to replicas, 2 s is enough.
DIRECT_INGRESS_ENV = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
DEPLOYED: list[str] = []
"""The applications `deploy` has (begun to) run from this process: all that `shutdown` may delete on a joined cluster."""
OWNERS_NAMESPACE = "trajforge_serve"
"""Ray's internal key-value store namespace that records who deployed each application (`record_owner`)."""
DETACHED = "detached"
"""The owner of an application deployed by `trajforge serve --detach`; a foreground one's is its Ray job (`this_owner`)."""
STOP_TIMEOUT_S = 120.0


def _builder(import_path: str):
    module_name, _, attribute = import_path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def deploy(serve_file: ServeFile, address: str | None = None, health_timeout_s: float = 180.0, direct_ingress: bool = False,
           detached: bool = False, announce: Callable[[], None] | None = None) -> str:
    """Start (or join) Ray, start Serve, run every application; returns the base URL once /health answers.

    `direct_ingress` turns on Serve's direct ingress in the Ray this starts (see `direct_endpoints`);
    a cluster joined with `address` must have been started with `DIRECT_INGRESS_ENV` instead.
    `detached` applications outlive this process: it refuses to start a Ray of its own for them. `announce` runs once the
    applications are built, before Ray is joined or started (a bad config is said before any word of a Ray)."""
    import ray
    from ray import serve

    # Build first: a bad config fails here, before a cluster is started. The applications' TRAJFORGE__
    # variables are already folded into their args (below --set); hide them so builders do not apply
    # them twice. Others (TRAJFORGE__ACTORS__... for the actors the generate front starts) stay.
    prefixes = tuple(f"{ENV_PREFIX}{app.name.upper()}__" for app in serve_file.applications)
    overrides = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith(prefixes)}
    try:
        with serve_file.args_source():
            applications = [(app, _builder(app.import_path)(app.args)) for app in serve_file.applications]
    finally:
        os.environ.update(overrides)
    if direct_ingress:
        for name, value in DIRECT_INGRESS_ENV.items():
            os.environ.setdefault(name, value)
    for name, value in PROXY_HEADERS_ENV.items():  # a Ray started here: X-Forwarded-For judged by trusted_proxies alone
        os.environ.setdefault(name, value)
    if announce is not None:
        announce()
    connect(address)
    if detached and started_ray_here():
        ray.shutdown()
        raise ServeStartError(cluster_needed("--detach"))
    http = serve_file.http_options
    replaced = check_running_serve(http.host, http.port, [app.name for app in serve_file.applications], detached=detached)
    warn_if_replicas_wait([(app.name, built) for app, built in applications if app.name not in replaced])
    serve.start(proxy_location=serve_file.proxy_location, http_options=proxy_options(http))
    for app, built in applications:
        log.info("deploying %s at %s", app.name, app.route_prefix)
        DEPLOYED.append(app.name)
        record_owner(app.name, detached)
        try:
            serve.run(built, name=app.name, route_prefix=app.route_prefix)
        except RuntimeError as exc:
            raise ServeStartError(f"application {app.name!r} did not start: {failure_reason(app.name) or exc}") from None
    host = "127.0.0.1" if http.host in WILDCARD_HOSTS else http.host
    url = f"{http.scheme}://{host}:{http.port}"
    wait_healthy(url, health_timeout_s, routes={app.route_prefix: app.name for app in serve_file.applications})
    return url


def proxy_options(http) -> dict:
    """Serve's http_options from the config's: with a certificate and key, the proxy answers HTTPS only (uvicorn's TLS)."""
    options = {"host": http.host, "port": http.port, "request_timeout_s": http.request_timeout_s, "keep_alive_timeout_s": http.keep_alive_timeout_s}
    if http.ssl_certfile:
        options.update(ssl_certfile=os.path.abspath(os.path.expanduser(http.ssl_certfile)),
                       ssl_keyfile=os.path.abspath(os.path.expanduser(http.ssl_keyfile)))
        if os.environ.get(TLS_KEY_PASSWORD_ENV):
            options["ssl_keyfile_password"] = os.environ[TLS_KEY_PASSWORD_ENV]
    return options


def connect(address: str | None) -> None:
    """Join or start Ray as every command does (`init_ray`: `address`, else $RAY_ADDRESS, else a cluster running on this
    machine, else a new local Ray), with the dashboard of a Ray it starts, to watch the applications in, and Ray's
    warnings shown; a refusal is one line. Already connected, it does nothing."""
    try:
        init_ray(address, include_dashboard=None, logging_level="WARNING")
    except ConfigError as exc:
        raise ServeStartError(str(exc)) from None


def cluster_needed(flag: str) -> str:
    """The refusal of --detach or --stop where this command would start a Ray of its own (which stops with it)."""
    return (f"{flag} needs a running Ray cluster, but this command would start a Ray of its own that stops when it exits "
            "(RAY_ADDRESS=local or --address local): run `ray start --head` first and unset RAY_ADDRESS=local, "
            "or name a cluster with --address HOST:6379")


def check_running_serve(host: str, port: int, app_names: list[str], detached: bool = False) -> list[str]:
    """When Serve already runs on the cluster (an earlier `trajforge serve`, `serve deploy`), it keeps its HTTP options:
    refuse another host or port before anything is deployed (the applications would answer elsewhere than printed), and
    say which of these applications replace running ones, and what then removes them; answers those."""
    from ray import serve
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:  # no Serve on this cluster yet: its proxy must be able to bind the port
        check_port_free(host, port)
        return []
    running = client.http_config
    if (running.host, running.port) != (host, port):
        raise ServeStartError(
            f"Serve already runs on this Ray cluster with its HTTP proxy on {running.host}:{running.port}, and keeps that while it "
            f"runs, so {host}:{port} cannot be used: pass --host {running.host} --port {running.port} to deploy beside it, "
            "or stop Serve first with `serve shutdown` (it removes every application on the cluster; `trajforge serve --stop` "
            "removes applications but leaves Serve and its HTTP options)")
    replaced = sorted(set(app_names) & set(serve.status().applications))
    if replaced:
        log.warning("%s", replacement_notice(replaced, detached))
    return replaced


def warn_if_replicas_wait(applications: list[tuple[str, object]]) -> None:
    """Before `serve.run`, which waits without a word (and this command with it) until every replica is placed: say when
    the applications' replicas ask for more CPUs or GPUs than the cluster has free, alone or together (`--set
    ingest.num_replicas=3` beside embed on two cores), naming the settings and values that fit. Applications that
    replace running ones are left out (their replicas' resources come free as they go)."""
    asks = []
    for name, built in applications:
        deployment = built._bound_deployment
        scaling = deployment._deployment_config.autoscaling_config
        count = (scaling.initial_replicas or scaling.min_replicas) if scaling else deployment.num_replicas
        options = deployment.ray_actor_options or {}
        if count:
            asks.append((name, float(options.get("num_cpus", 1.0)), float(options.get("num_gpus", 0) or 0), count))
    for name, cpus, gpus, count in asks:
        cluster.warn_if_cpus_taken(cpus, f"{name}.num_cpus", f"the {name} application's replicas", count)
        cluster.warn_if_short("GPU", gpus, f"{name}.num_gpus", f"the {name} application's replicas", count)
    cluster.warn_if_cpus_taken_together([(f"{name}.num_cpus", cpus, count) for name, cpus, _, count in asks], "the applications' replicas")


def replacement_notice(replaced: list[str], detached: bool) -> str:
    """What deploying over running applications of the same names does: this config's versions take their place, and the
    `trajforge serve` in the foreground that ran them (if one still does) no longer removes them when it stops."""
    names = ", ".join(replaced)
    foreground = [name for name in replaced if foreground_owner_alive(owner_of(name))]
    text = (f"replacing the running application(s) {names} on this cluster with this config's: "
            + ("they keep running after this command returns, until `trajforge serve --stop`" if detached
               else "stopping this command removes them"))
    if foreground:
        text += f"; the foreground `trajforge serve` that ran {', '.join(foreground)} leaves them running when it stops"
    return text


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


def wait_healthy(url: str, timeout_s: float, routes: Mapping[str, str] | None = None) -> None:
    """Wait until the applications at `url` answer. With `routes` (route prefix -> application name), first until
    Serve's proxy routes every one of them (its own `/-/routes`, which reaches no application), then `/health` only where
    an application is at `/` (the ingest app; embed and generate alone have none there); without, `/health`.
    `/health` is asked with a CORS preflight first (`OPTIONS`), which the ingest app answers before its per-address
    limits, so that starting the service spends none of the requests the limits allow 127.0.0.1 (often the first
    client's own address); `GET /health` where the preflight is not a 2xx."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    missing = dict(routes or {})
    while time.monotonic() < deadline:
        try:
            # only whether it is up: an HTTPS proxy's certificate is the clients' to check (a self-signed one, say)
            if missing:
                missing = _unrouted(url, missing)
                last_error = f"Serve does not route {', '.join(sorted(missing))} yet" if missing else last_error
            elif routes is not None and "/" not in routes:
                return
            elif httpx.options(f"{url}/health", timeout=5, verify=False).is_success or httpx.get(f"{url}/health", timeout=5, verify=False).status_code == 200:
                return
            else:
                last_error = "non-200 answer"
        except httpx.HTTPError as exc:
            last_error = str(exc)
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s ({last_error}); see the Ray logs under /tmp/ray/session_latest/logs")


def _unrouted(url: str, routes: Mapping[str, str]) -> dict[str, str]:
    """Those of `routes` that Serve's proxy at `url` does not route yet (all of them while it answers 503)."""
    answer = httpx.get(f"{url}/-/routes", timeout=5, verify=False)
    routed = answer.json() if answer.status_code == 200 else {}
    return {prefix: name for prefix, name in routes.items() if routed.get(prefix) != name}


def shutdown(app_names: Iterable[str] = ()) -> None:
    """Stop what this process started. A Ray it started itself goes with everything on it, Serve included
    (`ray.shutdown`; `serve.shutdown` would add nothing but a log line from the killed controller). On a
    cluster it joined (`--address`), only its own applications are deleted: Serve, other people's applications and
    those a later `trajforge serve` deployed over its own keep running."""
    import ray

    if not ray.is_initialized():
        return
    if not started_ray_here():
        mine, taken = [], []
        for name in dict.fromkeys(app_names):
            (mine if owner_of(name) in (None, this_owner()) else taken).append(name)
        if taken:
            log.warning("leaving %s running: another `trajforge serve` deployed over this command's", ", ".join(taken))
        delete_and_wait(mine)
    ray.shutdown()


def remove(address: str | None, app_names: list[str], on_stopping: Callable[[str], None] = lambda name: None) -> tuple[list[str], list[str]]:
    """Delete those of `app_names` that run on the cluster at `address` (what `--detach` left), except those a
    `trajforge serve` still running in the foreground deployed (its Ctrl-C removes them). `on_stopping(name)` is
    called before each is deleted. Returns (the names deleted, the foreground ones left running)."""
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client

    connect(address)
    try:
        if started_ray_here():
            raise ServeStartError(cluster_needed("--stop"))
        if _get_global_client(raise_if_no_controller_running=False) is None:
            return [], []
        running = set(serve.status().applications)
        present = [name for name in app_names if name in running]
        foreground = [name for name in present if foreground_owner_alive(owner_of(name))]
        removed = [name for name in present if name not in foreground]
        for name in removed:
            on_stopping(name)
        delete_and_wait(removed)
        return removed, foreground
    finally:
        ray.shutdown()


def delete_and_wait(app_names: list[str], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Delete the applications together and wait until Serve has removed them: it drains each one's replicas first, which
    with direct ingress takes its draining period (30 s unless the cluster set `DIRECT_INGRESS_ENV`), once for all."""
    from ray import serve

    for name in app_names:
        serve.delete(name, _blocking=False)
        forget_owner(name)
    deadline = time.monotonic() + timeout_s
    while app_names and set(app_names) & set(serve.status().applications):
        if time.monotonic() > deadline:
            raise ServeStartError(f"Serve did not remove {', '.join(app_names)} within {timeout_s:.0f} s; `serve status` shows why")
        time.sleep(0.5)


def this_owner() -> str:
    """The owner this process records for the applications it deploys in the foreground: its Ray job."""
    import ray

    return f"job:{ray.get_runtime_context().get_job_id()}"


def record_owner(app_name: str, detached: bool) -> None:
    """Note in the cluster who runs `app_name` now: `DETACHED`, or this process (which removes it when it stops)."""
    from ray.experimental.internal_kv import _internal_kv_put

    owner = DETACHED if detached else this_owner()
    _internal_kv_put(app_name.encode(), owner.encode(), overwrite=True, namespace=OWNERS_NAMESPACE)


def owner_of(app_name: str) -> str | None:
    """Who `record_owner` last recorded for `app_name`; None where no `trajforge serve` deployed it (`serve deploy`)."""
    from ray.experimental.internal_kv import _internal_kv_get

    owner = _internal_kv_get(app_name.encode(), namespace=OWNERS_NAMESPACE)
    return owner.decode() if owner else None


def forget_owner(app_name: str) -> None:
    from ray.experimental.internal_kv import _internal_kv_del

    _internal_kv_del(app_name.encode(), namespace=OWNERS_NAMESPACE)


def foreground_owner_alive(owner: str | None) -> bool:
    """Whether `owner` is a foreground `trajforge serve` whose Ray job (its driver) still runs; a killed one's is dead."""
    from ray._private.state import jobs

    if not owner or not owner.startswith("job:"):
        return False
    job_id = owner.removeprefix("job:")
    return any(job["JobID"] == job_id and not job["IsDead"] for job in jobs())


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
