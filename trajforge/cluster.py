"""The cluster's topology, from `configs/cluster.yaml` (`cluster:`): which node runs what, and what its devices can do.

Workers are pinned to nodes through custom Ray resources that each node advertises when it joins
(`ray start --address=HEAD:6379 --resources='{"learner_node": 2}'`). The embedded default has no such
node; the learner and the actors then drop the pin and say so (`advertised`). The learner and the
actors read the whole file, so that a typo anywhere in it fails at start.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trajforge.errors import ConfigError
from trajforge.logs import worker_runtime_env
from trajforge.placement import start_line
from trajforge.settings import load_section
from trajforge.settings.job_paths import job_runtime_env

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "configs" / "cluster.yaml"
SECTION = "cluster"
log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Device(_Strict):
    name: str
    """Marketing name, for reports."""
    memory_gb: float = Field(gt=0)
    """Memory of one device."""
    peak_tflops: float | None = Field(default=None, gt=0)
    """Dense bf16 tensor TFLOP/s (FP32 accumulate) of one device: the denominator of MFU."""


class NodeGroup(_Strict):
    nodes: int = Field(default=1, ge=1)
    """Machines in the group."""
    gpus_per_node: int = Field(default=0, ge=0)
    """GPUs per machine."""
    gpu: Device | None = None
    """The GPU model, when the group has GPUs."""
    host_memory_gb: float | None = Field(default=None, gt=0)
    """RAM of one machine (what offloaded optimizer state must fit in); null when unknown."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources one worker or actor of this group asks for, pinning it to the group's nodes."""


class ClusterSettings(_Strict):
    head: NodeGroup = Field(default_factory=NodeGroup)
    """The head node: Ray's GCS, Serve, the jobs' drivers."""
    learner: NodeGroup = Field(default_factory=NodeGroup)
    """The learner node(s): one Ray Train worker per GPU."""
    actors: NodeGroup = Field(default_factory=NodeGroup)
    """The generation actor nodes: one actor per GPU."""
    cpu_peak_tflops: float = Field(default=0.1, gt=0)
    """Peak fp32 TFLOP/s of one CPU worker (MFU on machines without GPUs; about one AVX2 core)."""


def load_cluster_settings(path: str | Path | None = None, assignments: Iterable[tuple[str, Any]] = ()) -> ClusterSettings:
    """File < TRAJFORGE__CLUSTER__* environment < `assignments` (from `--set cluster.x=y`)."""
    source = Path(path) if path else DEFAULT_PATH
    return load_section(ClusterSettings, source, SECTION, assignments)


def advertised(wanted: Mapping[str, float], total: Mapping[str, float], who: str, *, warn: bool, per_node: int = 1) -> dict[str, float]:
    """The custom resources of `wanted` that some node of the running cluster advertises (`total`:
    `ray.cluster_resources()`); each one left out is logged, since work pinned to it would wait forever, with the
    `ray start` line that has a node advertise it (`per_node` workers' worth: the node's GPUs)."""
    kept = {}
    for name, amount in wanted.items():
        if name in total:
            kept[name] = amount
        else:
            log.log(logging.WARNING if warn else logging.INFO, "no node advertises the resource %r; %s go anywhere (to pin them, "
                    "start their nodes with `%s`)", name, who, start_line({name: amount * per_node}))
    return kept


def warn_if_cpus_taken(cpus: float, setting: str, who: str, count: int = 1) -> None:
    """Before work whose tasks ask for `cpus` CPUs each (`setting` names the field; `count` of them held at once, as
    actors are): connect to Ray as the job will, and when no CPUs that many are free (Serve's replicas, other jobs) say
    so, since Ray would let the tasks wait without a word."""
    warn_if_short("CPU", cpus, setting, who, count)


def warn_if_short(resource: str, each: float, setting: str, who: str, count: int = 1) -> None:
    """`warn_if_cpus_taken` for any of Ray's resources (`CPU`, `GPU`): `count` tasks or actors of `each` that Ray
    would leave waiting without a word where the cluster has, or has free, fewer than that many."""
    import ray

    init_ray()
    needed = each * count
    total, free = ray.cluster_resources().get(resource, 0.0), ray.available_resources().get(resource, 0.0)
    if needed <= 0 or free >= needed:
        return
    unit = f"{resource}s"
    held = _held(total, free, needed, unit)
    many = f" ({count} of them: {needed:g})" if count > 1 else ""
    lower = max(min(free / count, each / 2), 0.1)
    fix = f"lower it (--set {setting}={lower:g}), stop what holds them, or add" if total > 0 else "add"
    log.warning("%s; %s ask for %s=%g %s each%s and wait until that many are free: %s %s to the cluster (`ray status` "
                "shows the pending demand)", held, who, setting, each, unit, many, fix, unit)


def warn_if_cpus_taken_together(asks: Sequence[tuple[str, float, int]], who: str) -> None:
    """Before work whose parts hold CPUs at the same time (the build's tasks feed its embedding actors, which keep theirs
    for the whole run): `asks` are (setting, CPUs each, how many at once). Each part may fit in the free CPUs alone and
    still wait for ever beside the others, so their sum is checked, and the warning names a value of each setting that
    fits together. A part that does not fit even alone is left to `warn_if_cpus_taken`, which names it."""
    import ray

    init_ray()
    needed = sum(each * count for _, each, count in asks)
    total, free = ray.cluster_resources().get("CPU", 0.0), ray.available_resources().get("CPU", 0.0)
    if needed <= 0 or free >= needed or any(each * count > free for _, each, count in asks):
        return
    parts = " + ".join(f"{setting}={each:g}" + (f" x {count}" if count > 1 else "") for setting, each, count in asks)
    share = free / needed
    lower = " ".join(f"--set {setting}={max(math.floor(each * share * 100) / 100, 0.01):g}" for setting, each, _ in asks)
    log.warning("%s; %s run at once and ask for %g CPUs together (%s), so they wait until that many are free: lower them "
                "(%s), stop what holds them, or add CPUs to the cluster (`ray status` shows the pending demand)",
                _held(total, free, needed, "CPUs"), who, needed, parts, lower)


def _held(total: float, free: float, needed: float, unit: str) -> str:
    return (f"the cluster has {total:g} {unit}" if total < needed
            else f"only {free:g} of the cluster's {total:g} {unit} are free (Serve's replicas and other work hold the rest)")


def init_ray(address: str | None = None, *, include_dashboard: bool | None = False, logging_level: str = "ERROR") -> None:
    """Connect this driver to Ray, the one way every command does: `address`, else $RAY_ADDRESS, else a cluster running
    on this machine, else a new local Ray. An address that does not answer, or whose cluster turns this driver's token
    (or its lack of one) away, is refused within seconds (`check_reachable`). Already connected, it does nothing.

    A Ray it starts has no dashboard and Ray logs only errors, as a job's driver wants; `trajforge serve` asks for the
    dashboard where Ray can run one (`include_dashboard=None`, Ray's default) and Ray's warnings (`logging_level`).
    With `--log-dir` the job's workers log there too (`trajforge.logs.worker_runtime_env`)."""
    import ray

    if ray.is_initialized():
        return
    check_reachable(address)
    try:
        ray.init(address=address, ignore_reinit_error=True, logging_level=logging_level, log_to_driver=False,
                 include_dashboard=include_dashboard, runtime_env=beside_the_job(worker_runtime_env()))
    except ConnectionError as exc:
        raise ConfigError(connect_failure(exc)) from None


def beside_the_job(wanted: dict) -> dict | None:
    """`wanted` (this driver's runtime env for its workers) less what the runtime env of the job it runs in already sets
    (`ray job submit --runtime-env-json '{"env_vars": {"TRAJFORGE_LOG_DIR": ...}}'`): Ray refuses a driver that sets an
    environment variable or field its job sets too, with a ValueError before anything runs. The job's values reach all
    of its workers anyway, and win. Outside a job, `wanted` as it is."""
    job = job_runtime_env()
    kept = {key: value for key, value in wanted.items() if key != "env_vars" and key not in job}
    env_vars = {name: value for name, value in wanted.get("env_vars", {}).items() if name not in (job.get("env_vars") or {})}
    return {**kept, **({"env_vars": env_vars} if env_vars else {})} or None


TOKEN_WHERE = "the token is ~/.ray/auth_token on the head node, or RAY_AUTH_TOKEN"


def sends_token() -> bool:
    """Whether this driver sends a token to a cluster it names: Ray sends one only with RAY_AUTH_MODE=token."""
    return os.environ.get("RAY_AUTH_MODE", "").lower() == "token"


def connect_failure(exc: ConnectionError) -> str:
    """What a `ray.init` that could not join a cluster means, and what to do. A cluster whose port answers but that
    refuses this process most often wants a token: this Ray starts clusters with token authentication, and a driver
    sends the token only with RAY_AUTH_MODE=token."""
    reason = str(exc).split(". ")[0].rstrip(".")
    if "Could not find any running Ray instance" in reason:
        return f"{reason} on this machine: start one with `ray start --head`, or point RAY_ADDRESS or --address at one"
    if not sends_token():
        return (f"{reason}: its port answers, so the cluster most likely wants an authentication token (this Ray starts "
                f"clusters with token authentication): `export RAY_AUTH_MODE=token` ({TOKEN_WHERE}) and run the command again")
    return f"{reason}: check that the address is the one `ray start --head` printed and that the token in ~/.ray/auth_token is that cluster's"


def token_refusal(named: str, refusal: str) -> str:
    """What to do when the cluster (`named` as the command was given it) answered `refusal`, its token authentication's
    "missing or incorrect", to the token this driver sends, or to its lack of one."""
    if not sends_token():
        return (f"the Ray cluster at {named} wants an authentication token ({refusal}), which this driver sends only with "
                f"RAY_AUTH_MODE=token: `export RAY_AUTH_MODE=token` ({TOKEN_WHERE}) and run the command again")
    return (f"the Ray cluster at {named} refuses this driver's authentication token ({refusal}): give it that cluster's "
            "token, from ~/.ray/auth_token on its head node, in RAY_AUTH_TOKEN or ~/.ray/auth_token here")


def address_in_use(address: str | None) -> str | None:
    """The address Ray's `init` goes by: $RAY_ADDRESS stands in for None and `auto` (Ray's own rule), else `address`."""
    from_env = os.environ.get("RAY_ADDRESS")
    return from_env if from_env and address in (None, "auto") else address


def ray_to_join(address: str | None) -> str | None:
    """The Ray `init_ray(address)` would join (`auto` where none is found yet), or None where it would start a local Ray
    of its own: $RAY_ADDRESS stands in for None and `auto`, `local` and no cluster on this machine start one."""
    from ray._private.services import get_ray_address_from_environment

    chosen = address_in_use(address)
    if chosen == "local":
        return None
    if chosen not in (None, "auto"):
        return chosen
    try:
        return get_ray_address_from_environment(chosen, None)
    except ConnectionError:  # `auto` with no cluster on this machine: connecting says so
        return "auto"


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A `host:port` address (not `auto`, not `ray://`) must answer on its port as a Ray GCS that takes this driver's
    token (`cluster_id_error`): Ray itself would retry a wrong port for minutes, a port that answers another protocol
    (the dashboard's 8265, a web server) for some 40 s a try, and a refused token for 20 s, before saying only that it
    could not connect. With `address` None or `auto`, $RAY_ADDRESS is the one Ray would use, and the one checked. It
    does not check a cluster found on this machine (`auto`), whose token Ray finds in ~/.ray/auth_token."""
    import socket

    chosen = address_in_use(address)
    named = f"--address {chosen}" if chosen == address else f"RAY_ADDRESS={chosen}"
    if not chosen or chosen in ("auto", "local") or "://" in chosen or ":" not in chosen:
        return
    host, _, port = chosen.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no Ray cluster answers at {named} ({exc}); start one there with `ray start --head`, "
                          "or give the address `ray start` printed (`--address auto` finds the one on this machine; "
                          "unset RAY_ADDRESS to start a Ray for this command alone)") from None
    error = cluster_id_error(chosen, timeout_s)
    if error is None:
        return
    code, details = error
    if code == "UNAUTHENTICATED":
        raise ConfigError(token_refusal(named, details))
    mismatch = not_a_gcs(code, details)
    if mismatch:
        raise ConfigError(f"{named} answers, but not as a Ray cluster's GCS: {mismatch}; give the GCS's address, HOST:6379 "
                          "unless `ray start --head --port` chose another (`ray status` on the head node prints it)")


def not_a_gcs(code: str, details: str) -> str | None:
    """What the port is instead of a GCS, where the cluster-id call's failure (its gRPC status `code` and `details`) says
    that clearly: bytes that are not HTTP/2 (a web server, the dashboard) or a gRPC server without the GCS's service
    (the Ray Client's port); else None. A GCS that answers slowly (DEADLINE_EXCEEDED), a port that closes the connection
    (a GCS restarting) or a TLS handshake that fails (RAY_USE_TLS) are left for `ray.init` to find."""
    if code == "UNAVAILABLE" and "Failed parsing HTTP/2" in details:  # gRPC's own words for a server that is not HTTP/2
        return "it does not speak gRPC (a web server, such as the Ray dashboard's port, 8265 by default?)"
    if code == "UNIMPLEMENTED":
        return "it speaks gRPC but has no GCS service (the Ray Client's port, 10001 by default, is given as ray://HOST:10001)"
    return None


def cluster_id_error(address: str, timeout_s: float) -> tuple[str, str] | None:
    """How the GCS at `address` failed the first thing `ray.init` asks, its cluster id: the gRPC status code's name and
    details (UNAUTHENTICATED: token authentication turned away the token this driver would send, none without
    RAY_AUTH_MODE=token); None when it answered. Asked once, within `timeout_s`, on a channel Ray builds as its own
    clients' (TLS and token as configured)."""
    import grpc
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    channel = init_grpc_channel(address)
    try:
        gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""
    finally:
        channel.close()
    return None
