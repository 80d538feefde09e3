"""configs/cluster.yaml: the topology loads strictly, and pins are kept only where a node advertises them; a driver that\njoins a cluster is refused in seconds where no cluster answers or where the cluster wants its token."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import RAY, REPO, free_port

from trajforge.cluster import advertised, check_reachable, load_cluster_settings
from trajforge.errors import ConfigError


def test_the_shipped_topology_pins_learner_and_actors():
    cluster = load_cluster_settings()
    assert cluster.learner.resources == {"learner_node": 1} and cluster.actors.resources == {"actor_node": 1}
    assert cluster.learner.gpus_per_node == 2 and cluster.actors.nodes == 3


def test_a_typo_names_the_field(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("cluster:\n  learner:\n    gpus_per_nod: 2\n")
    with pytest.raises(ConfigError, match="gpus_per_nod"):
        load_cluster_settings(path)


def test_only_advertised_resources_are_kept_and_the_rest_are_logged(caplog):
    total = {"CPU": 16.0, "GPU": 3.0, "actor_node": 3.0}
    with caplog.at_level(logging.INFO, logger="trajforge.cluster"):
        kept = advertised({"actor_node": 1, "learner_node": 1}, total, "the generation actors", warn=True)
    assert kept == {"actor_node": 1}
    assert [(record.levelno, "'learner_node'" in record.getMessage()) for record in caplog.records] == [(logging.WARNING, True)]
    assert """start their nodes with `ray start --address=HEAD:6379 --resources='{"learner_node": 1}'`""" in caplog.text


def test_a_job_whose_tasks_cannot_get_their_cpus_says_so(serve_url, caplog):
    """The session's Serve holds some of its Ray's 2 CPUs, as `trajforge serve` does on a head node: tasks of 2 CPUs wait."""
    import ray

    from trajforge.cluster import warn_if_cpus_taken

    with caplog.at_level(logging.WARNING, logger="trajforge.cluster"):
        warn_if_cpus_taken(0.001, "build.cpus_per_task", "the build's tasks")
        assert caplog.text == ""
        warn_if_cpus_taken(2.0, "build.cpus_per_task", "the build's tasks")
    assert ray.available_resources().get("CPU", 0) < 2.0
    assert "of the cluster's 2 CPUs are free" in caplog.text and "the build's tasks ask for build.cpus_per_task=2 CPUs each" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trajforge.cluster"):
        warn_if_cpus_taken(8.0, "build.cpus_per_task", "the build's tasks")
    assert "the cluster has 2 CPUs; the build's tasks ask for build.cpus_per_task=8" in caplog.text


def _cluster(monkeypatch, total: dict[str, float], free: dict[str, float]) -> None:
    """A running Ray of these resources on one node, without starting one: what `ray.cluster_resources()`,
    `ray.available_resources()` and the nodes' totals answer."""
    import ray

    monkeypatch.setattr("trajforge.cluster.init_ray", lambda *args, **kwargs: None)
    monkeypatch.setattr("trajforge.placement.node_resources", lambda: [("10.0.0.1", dict(total))])
    monkeypatch.setattr(ray, "cluster_resources", lambda: dict(total))
    monkeypatch.setattr(ray, "available_resources", lambda: dict(free))


def test_actors_that_ask_for_gpus_a_cluster_lacks_say_so_before_they_wait(monkeypatch, caplog):
    """vLLM actors (actors.num_gpus=1) on a cluster without GPUs would wait for them without a word, as tasks for CPUs
    that are not free would; so would the third of three actors on a cluster of two GPUs."""
    from trajforge.cluster import warn_if_short

    _cluster(monkeypatch, {"CPU": 16.0}, {"CPU": 16.0})
    with caplog.at_level(logging.WARNING, logger="trajforge.cluster"):
        warn_if_short("GPU", 0.0, "actors.num_gpus", "the generation actors", 3)
        assert caplog.text == ""
        warn_if_short("GPU", 1.0, "actors.num_gpus", "the generation actors", 3)
    assert ("the cluster has 0 GPUs; the generation actors ask for actors.num_gpus=1 GPUs each (3 of them: 3) and wait "
            "until that many are free: add GPUs to the cluster") in caplog.text
    caplog.clear()
    _cluster(monkeypatch, {"CPU": 16.0, "GPU": 2.0}, {"CPU": 16.0, "GPU": 2.0})
    with caplog.at_level(logging.WARNING, logger="trajforge.cluster"):
        warn_if_short("GPU", 1.0, "actors.num_gpus", "the generation actors", 2)
        assert caplog.text == ""
        warn_if_short("GPU", 1.0, "actors.num_gpus", "the generation actors", 3)
    assert "the cluster has 2 GPUs; the generation actors ask for actors.num_gpus=1 GPUs each (3 of them: 3)" in caplog.text


def test_start_actors_warns_before_its_actors_wait_for_gpus_or_cpus(monkeypatch, caplog):
    import ray

    from actors.actor import start_actors
    from actors.settings import ActorSettings

    _cluster(monkeypatch, {"CPU": 2.0}, {"CPU": 2.0})

    def started(*args, **kwargs):
        raise RuntimeError("the actors would be made here")

    monkeypatch.setattr(ray, "remote", started)
    settings = ActorSettings(count=3, num_cpus=1, num_gpus=1)
    with caplog.at_level(logging.WARNING, logger="trajforge.cluster"), pytest.raises(RuntimeError, match="made here"):
        start_actors(settings, cluster=load_cluster_settings())
    assert "the cluster has 0 GPUs; the generation actors ask for actors.num_gpus=1 GPUs each (3 of them: 3)" in caplog.text
    assert "the cluster has 2 CPUs; the generation actors ask for actors.num_cpus=1 CPUs each (3 of them: 3)" in caplog.text


def test_trajforge_build_warns_before_its_tasks_wait(serve_url, tmp_path, capsys, monkeypatch):
    import pipelines.build
    from trajforge.cli.main import main

    started = []
    monkeypatch.setattr(pipelines.build, "run_build", lambda settings, **_: started.append(settings.cpus_per_task) or MANIFEST)
    assert main(["build", "--lake", str(tmp_path), "--json", "--set", "build.cpus_per_task=0.001", "--set", "build.embedding.cpus=0.001"]) == 0
    assert "wait until" not in capsys.readouterr().err
    assert main(["build", "--lake", str(tmp_path), "--json", "--set", "build.cpus_per_task=2", "--set", "build.embedding.cpus=0.001"]) == 0
    warned = capsys.readouterr().err
    assert "the build's tasks ask for build.cpus_per_task=2 CPUs each" in warned and "build.embedding.cpus" not in warned
    assert main(["build", "--lake", str(tmp_path), "--json", "--set", "build.cpus_per_task=0.001", "--set", "build.embedding.cpus=2"]) == 0
    assert "the build's embedding actors (--no-embed: none) ask for build.embedding.cpus=2" in capsys.readouterr().err
    assert main(["build", "--lake", str(tmp_path), "--json", "--no-embed", "--set", "build.cpus_per_task=0.001", "--set", "build.embedding.cpus=2"]) == 0
    assert "wait until" not in capsys.readouterr().err
    assert started == [0.001, 2.0, 0.001, 0.001]


def test_trajforge_build_warns_when_its_tasks_and_embedding_actors_fit_alone_but_not_together(tmp_path, capsys, monkeypatch):
    """A 2-CPU head node whose ingest replica holds 0.5: a task (1 CPU) fits and the embedding actor (1 CPU) fits, but the
    actor keeps its CPU while the tasks feed it, so the build's first task waited for ever without a word."""
    import pipelines.build
    from trajforge.cli.main import main

    _cluster(monkeypatch, {"CPU": 2.0}, {"CPU": 1.5})
    monkeypatch.setattr(pipelines.build, "run_build", lambda settings, **_: MANIFEST)
    assert main(["build", "--lake", str(tmp_path), "--json", "--set", "build.cpus_per_task=1", "--set", "build.embedding.cpus=1"]) == 0
    warned = capsys.readouterr().err
    assert ("only 1.5 of the cluster's 2 CPUs are free (Serve's replicas and other work hold the rest); the build's tasks and its "
            "embedding actors (--no-embed: none) run at once and ask for 2 CPUs together (build.cpus_per_task=1 + "
            "build.embedding.cpus=1), so they wait until that many are free: lower them (--set build.cpus_per_task=0.75 "
            "--set build.embedding.cpus=0.75)") in warned
    for fits in (["--set", "build.cpus_per_task=0.75", "--set", "build.embedding.cpus=0.75"], ["--no-embed"]):
        assert main(["build", "--lake", str(tmp_path), "--json", "--set", "build.cpus_per_task=1", *fits]) == 0
        assert "wait until" not in capsys.readouterr().err
    actors = ["--set", "build.embedding.actors=2", "--set", "build.embedding.cpus=0.5"]
    assert main(["build", "--lake", str(tmp_path), "--json", *actors, "--set", "build.cpus_per_task=0.5"]) == 0  # 1.5: fits exactly
    assert "wait until" not in capsys.readouterr().err
    assert main(["build", "--lake", str(tmp_path), "--json", *actors, "--set", "build.cpus_per_task=0.75"]) == 0
    assert ("ask for 1.75 CPUs together (build.cpus_per_task=0.75 + build.embedding.cpus=0.5 x 2), so they wait until that many "
            "are free: lower them (--set build.cpus_per_task=0.64 --set build.embedding.cpus=0.42)") in capsys.readouterr().err


MANIFEST = {"build_id": "stub"}


REFUSAL = "InvalidAuthToken: Authentication token is missing or incorrect"  # what a token-authenticated GCS answers


@contextmanager
def gcs_answering(refuse: bool | None) -> Iterator[str]:
    """A gRPC server standing in for a cluster's GCS: every call is refused as token authentication refuses a driver
    without the cluster's token (`refuse`), or answered with an empty reply; with `refuse` None it has no service at
    all (a gRPC server that is no GCS, as the Ray Client's port is). Yields its HOST:PORT."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
        if refuse:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)
        return b""

    class EveryMethod(grpc.GenericRpcHandler):
        def service(self, handler_call_details):
            return grpc.unary_unary_rpc_method_handler(answer)

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    if refuse is not None:
        server.add_generic_rpc_handlers((EveryMethod(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def refused_within_seconds(address: str) -> str:
    """check_reachable's refusal of `address`, which must come in under 5 s (ray.init would retry for 20-40 s)."""
    started = time.monotonic()
    with pytest.raises(ConfigError) as refused:
        check_reachable(address)
    assert time.monotonic() - started < 5
    return str(refused.value)


def test_a_cluster_that_refuses_this_drivers_token_is_named_before_ray_retries(monkeypatch):
    """Ray retried such a cluster for 20 s and then said only that it failed to connect: the GCS's own refusal is asked
    for once, so the command stops in seconds, saying what to export, or with RAY_AUTH_MODE=token that the token is wrong."""
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with gcs_answering(refuse=True) as address:
        assert refused_within_seconds(address) == (
            f"the Ray cluster at --address {address} wants an authentication token ({REFUSAL}), which this driver sends only "
            "with RAY_AUTH_MODE=token: `export RAY_AUTH_MODE=token` (the token is ~/.ray/auth_token on the head node, or "
            "RAY_AUTH_TOKEN) and run the command again")
        monkeypatch.setenv("RAY_ADDRESS", address)
        with pytest.raises(ConfigError, match=rf"the Ray cluster at RAY_ADDRESS={address} wants an authentication token"):
            check_reachable("auto")
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        with pytest.raises(ConfigError, match=rf"at RAY_ADDRESS={address} refuses this driver's authentication token") as wrong:
            check_reachable(None)
        assert "export RAY_AUTH_MODE" not in str(wrong.value) and "~/.ray/auth_token on its head node" in str(wrong.value)
    monkeypatch.delenv("RAY_ADDRESS")
    with gcs_answering(refuse=False) as address:
        check_reachable(address)  # a cluster that takes this driver: nothing to say, ray.init joins it


@contextmanager
def serving(kind: str) -> Iterator[str]:
    """A local server that answers, but not as a GCS: `http` (a plain HTTP/1 server, as the dashboard's port is) or
    `silent` (takes the connection and says nothing, as a GCS too busy to answer in time). Yields its HOST:PORT."""
    import http.server
    import socket
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    if kind == "http":
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
    else:
        with socket.create_server(("127.0.0.1", 0), backlog=8) as listening:  # the kernel takes connections; none is read
            yield f"127.0.0.1:{listening.getsockname()[1]}"


def test_an_address_that_answers_http_or_another_grpc_service_is_refused_in_seconds_naming_the_gcs_port(monkeypatch):
    """ray.init waited some 40 s a try on a port that answers but is not a GCS (the dashboard's 8265, a web server)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with serving("http") as address:
        assert refused_within_seconds(address) == (
            f"--address {address} answers, but not as a Ray cluster's GCS: it does not speak gRPC (a web server, such as the "
            "Ray dashboard's port, 8265 by default?); give the GCS's address, HOST:6379 unless `ray start --head --port` "
            "chose another (`ray status` on the head node prints it)")
        monkeypatch.setenv("RAY_ADDRESS", address)
        with pytest.raises(ConfigError, match=rf"^RAY_ADDRESS={address} answers, but not as a Ray cluster's GCS"):
            check_reachable(None)
    monkeypatch.delenv("RAY_ADDRESS")
    with gcs_answering(refuse=None) as address, pytest.raises(ConfigError, match=r"it speaks gRPC but has no GCS service .*ray://HOST:10001"):
        check_reachable(address)


def test_a_gcs_too_busy_to_answer_in_time_is_left_to_ray(monkeypatch):
    """Only a clear protocol mismatch is refused: a port that takes the connection and is slow to answer may be a busy GCS."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with serving("silent") as address:
        assert check_reachable(address, timeout_s=0.5) is None  # ray.init then waits for it, as for any slow GCS


@pytest.mark.parametrize("command", [["queue", "status", "some-queue"], ["serve"]])
def test_a_command_joining_a_cluster_that_wants_its_token_stops_in_seconds(command):
    environ = {name: value for name, value in os.environ.items() if name not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    with gcs_answering(refuse=True) as address:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "trajforge", *command, "--address", address], cwd=REPO, env=environ,
                                capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"the Ray cluster at --address {address} wants an authentication token" in result.stderr
    assert elapsed < 15  # Ray's own retries took 20 s before it said anything


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A Ray head started as this Ray starts clusters, with token authentication (its token given in RAY_AUTH_TOKEN,
    so no ~/.ray/auth_token is written); killed as a process group, never with `ray stop`. Yields (HOST:PORT, token)."""
    token = secrets.token_hex(32)
    environ = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}
    environ.pop("RAY_ADDRESS", None)
    temp_dir, port = Path(f"/tmp/rt{os.getpid()}"), free_port()  # short: Ray's socket paths are length-limited
    command = [RAY, "start", "--head", "--block", "--num-cpus", "1", "--port", str(port), "--include-dashboard", "false",
               "--ray-client-server-port", str(free_port()), "--temp-dir", str(temp_dir), "--disable-usage-stats"]
    process = subprocess.Popen(command, env=environ, cwd=tmp_path_factory.mktemp("token-head"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    address, deadline = f"127.0.0.1:{port}", time.monotonic() + 120
    try:
        while _probe(address, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}).returncode != 0:
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("the token-authenticated Ray head did not come up in 120 s")
            time.sleep(1)
        yield address, token
    finally:
        subprocess.run(["pkill", "-9", "-s", str(process.pid)], check=False)
        process.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _probe(address: str, auth: dict[str, str]) -> subprocess.CompletedProcess:
    """`check_reachable(address)` in a fresh driver whose only authentication settings are `auth`."""
    environ = {name: value for name, value in os.environ.items() if not name.startswith(("RAY_AUTH_", "RAY_ADDRESS"))}
    return subprocess.run([sys.executable, "-c", f"from trajforge.cluster import check_reachable; check_reachable({address!r})"],
                          cwd=REPO, env={**environ, **auth}, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_a_real_token_authenticated_cluster_is_told_apart_by_its_answer(token_cluster):
    """What Ray's GCS answers: a driver without RAY_AUTH_MODE=token, or with another cluster's token, is refused at once;
    one with the cluster's token passes."""
    address, token = token_cluster
    started = time.monotonic()
    without = _probe(address, {})
    assert without.returncode == 1 and f"the Ray cluster at --address {address} wants an authentication token" in without.stderr
    assert time.monotonic() - started < 15
    wrong = _probe(address, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    assert wrong.returncode == 1 and "refuses this driver's authentication token" in wrong.stderr
    assert _probe(address, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}).returncode == 0
