"""`trajforge serve` against a running Ray cluster (the session's Ray stands in for `ray start --head`): it refuses
an HTTP host or port that the running Serve would ignore, names an address where no cluster answers, stays up
until SIGHUP (a closed terminal) and then removes only its own applications, and with --detach leaves them running
until `--stop`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import free_port

from trajforge.errors import ConfigError, ServeStartError

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, port: int, name: str) -> Path:
    """A Serve config with one small ingest application under its own name and route, on the session's proxy."""
    config = {
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{"name": name, "route_prefix": f"/{name}", "import_path": "serve_apps.ingest.app:build_app",
                          "args": {"lake": str(tmp_path / "lake"), "num_cpus": 0.05}}],
    }
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _serve(config: Path, *flags: str) -> subprocess.Popen:
    import ray

    return subprocess.Popen([sys.executable, "-m", "trajforge", "serve", "--config", str(config), "--address",
                             ray.get_runtime_context().gcs_address, *flags],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _read_until(process: subprocess.Popen, marker: str, timeout_s: float = 180) -> str:
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} in the output:\n" + "".join(seen[-40:]))


def test_a_port_the_running_serve_would_ignore_is_refused_before_anything_is_deployed(serve_url):
    from ray import serve

    from trajforge.serving import check_running_serve

    port = int(serve_url.rsplit(":", 1)[1])
    with pytest.raises(ServeStartError, match=rf"HTTP proxy on 127.0.0.1:{port}.*`serve shutdown`") as refused:
        check_running_serve("127.0.0.1", port + 1, ["not-deployed"])
    assert f"pass --host 127.0.0.1 --port {port} to deploy beside it" in str(refused.value)
    assert "leave out" not in str(refused.value)  # leaving them out means the config's, which a wildcard host is not
    with pytest.raises(ServeStartError, match="0.0.0.0:"):
        check_running_serve("0.0.0.0", port, ["not-deployed"])
    assert "not-deployed" not in serve.status().applications
    check_running_serve("127.0.0.1", port, ["not-deployed"])  # the running options: nothing to say


def test_a_port_another_process_listens_on_is_refused_where_serve_would_start(monkeypatch):
    """A Ray with no Serve yet (`RAY_ADDRESS=local` beside a `ray start --head` cluster whose Serve holds the port): the
    proxy could not bind, and the command would talk to the other Serve, so it is refused, naming what to do."""
    import ray.serve.context

    from trajforge.serving import check_running_serve

    monkeypatch.setattr(ray.serve.context, "_get_global_client", lambda **_: None)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        for host in ("127.0.0.1", "0.0.0.0"):
            with pytest.raises(ServeStartError, match=rf"{host}:{port} is already in use .*pass another --port"):
                check_running_serve(host, port, ["not-deployed"])
    check_running_serve("127.0.0.1", free_port(), ["not-deployed"])  # a free port: nothing to refuse


def test_a_refused_start_leaves_the_running_application_of_the_same_name_alone(serve_url, tmp_path):
    """Another terminal's `trajforge serve --port 8001` on the head node: one line, exit 2, and the running ingest stays."""
    import ray
    from ray import serve

    port = int(serve_url.rsplit(":", 1)[1])
    process = _serve(_config(tmp_path, port + 1, "ingest"))
    assert process.wait(timeout=120) == 2
    printed = process.stdout.read()
    assert printed.splitlines()[0] == f"Ray: joining the cluster at {ray.get_runtime_context().gcs_address}"  # said first
    assert f"Serve already runs on this Ray cluster with its HTTP proxy on 127.0.0.1:{port}" in printed
    assert serve.status().applications["ingest"].status == "RUNNING"
    assert httpx.get(f"{serve_url}/health", timeout=10).status_code == 200


def test_replacing_a_running_application_is_said(serve_url, caplog):
    from trajforge.serving import check_running_serve

    port = int(serve_url.rsplit(":", 1)[1])
    with caplog.at_level("WARNING", logger="trajforge.serving"):
        check_running_serve("127.0.0.1", port, ["ingest", "not-deployed"])
    assert "replacing the running application(s) ingest on this cluster" in caplog.text
    assert "stopping this command removes them" in caplog.text


def test_replacing_with_detach_says_they_outlive_the_command_and_the_foreground_serve_leaves_them(serve_url, caplog):
    """--detach over a foreground `trajforge serve`'s applications: the command returns, and the foreground one's Ctrl-C
    leaves them (it removes only what it still owns)."""
    from trajforge.serving import check_running_serve, forget_owner, record_owner

    port = int(serve_url.rsplit(":", 1)[1])
    record_owner("ingest", detached=False)  # this test's driver stands in for a foreground `trajforge serve`
    try:
        with caplog.at_level("WARNING", logger="trajforge.serving"):
            check_running_serve("127.0.0.1", port, ["ingest"], detached=True)
    finally:
        forget_owner("ingest")
    assert "they keep running after this command returns, until `trajforge serve --stop`" in caplog.text
    assert "stopping this command removes them" not in caplog.text
    assert "the foreground `trajforge serve` that ran ingest leaves them running when it stops" in caplog.text


@pytest.mark.parametrize("command", [["serve"], ["serve", "--stop"], ["queue", "status", "some-queue"]])
def test_an_address_where_no_cluster_answers_fails_at_once(command):
    port, started = free_port(), time.monotonic()
    result = subprocess.run([sys.executable, "-m", "trajforge", *command, "--address", f"127.0.0.1:{port}"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"no Ray cluster answers at --address 127.0.0.1:{port}" in result.stderr
    assert time.monotonic() - started < 30  # Ray alone retried such an address for minutes


@pytest.mark.parametrize("command", [["serve"], ["synth-rules", "--limit", "1"]])
def test_a_ray_address_variable_where_no_cluster_answers_fails_at_once(command, tmp_path, monkeypatch):
    """RAY_ADDRESS is the address Ray uses when none is given: a dead one is refused as --address is, not retried for minutes."""
    port, started = free_port(), time.monotonic()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    result = subprocess.run([sys.executable, "-m", "trajforge", *command], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"no Ray cluster answers at RAY_ADDRESS=127.0.0.1:{port}" in result.stderr and "unset RAY_ADDRESS" in result.stderr
    assert time.monotonic() - started < 30


def test_auto_and_client_addresses_are_left_to_ray():
    from trajforge.cluster import check_reachable

    for address in (None, "auto", "ray://head:10001"):
        check_reachable(address)


@pytest.mark.slow
def test_sighup_removes_the_applications_of_a_serve_that_joined_and_detach_leaves_them(serve_url, tmp_path):
    from ray import serve

    port = int(serve_url.rsplit(":", 1)[1])
    process = _serve(_config(tmp_path, port, "hup-probe"))
    try:
        printed = _read_until(process, "Ctrl-C")
        assert "on the Ray cluster at" in printed and "the cluster and Serve keep running" in printed
        assert httpx.get(f"{serve_url}/hup-probe/health", timeout=10).status_code == 200
        process.send_signal(signal.SIGHUP)  # the terminal it ran in was closed
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "hup-probe" not in serve.status().applications
    assert httpx.get(f"{serve_url}/health", timeout=10).status_code == 200  # the session's applications are untouched

    (tmp_path / "detached").mkdir()
    config = _config(tmp_path / "detached", port, "detached-probe")
    process = _serve(config, "--detach")
    try:
        assert process.wait(timeout=180) == 0, process.stdout.read()
        assert "`trajforge serve --stop` removes them" in process.stdout.read()
        assert serve.status().applications["detached-probe"].status == "RUNNING"
        assert httpx.get(f"{serve_url}/detached-probe/health", timeout=10).status_code == 200
        stop = _serve(config, "--stop")
        assert stop.wait(timeout=120) == 0 and "removed detached-probe" in stop.stdout.read()
        assert "detached-probe" not in serve.status().applications
        assert httpx.get(f"{serve_url}/health", timeout=10).status_code == 200
    finally:
        if process.poll() is None:
            process.kill()
        if "detached-probe" in serve.status().applications:
            serve.delete("detached-probe")


def test_detach_or_stop_without_a_cluster_on_this_machine_is_one_line(monkeypatch):
    import ray

    from trajforge.serving import connect

    def no_cluster(**_):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "init", no_cluster)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ServeStartError, match=r"Could not find any running Ray instance on this machine: start one with `ray start --head`"):
        connect("auto")


def test_serve_joins_ray_as_every_command_does_with_the_dashboard_of_a_ray_it_starts(monkeypatch):
    """One way to connect (`init_ray`): `trajforge serve` asks it for the dashboard and Ray's warnings, and, like every
    command, does nothing where this process is already connected (no second address check, no second `ray.init`)."""
    import ray

    from trajforge.serving import connect

    calls = []
    monkeypatch.setattr(ray, "init", lambda **options: calls.append(options))
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    connect(None)
    [options] = calls
    assert options["address"] is None and options["ignore_reinit_error"] and not options["log_to_driver"]
    assert options["include_dashboard"] is None and options["logging_level"] == "WARNING"  # None: Ray's default, on where it can
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    connect(f"127.0.0.1:{free_port()}")  # nothing answers there, but this process is connected already
    assert len(calls) == 1


def test_a_cluster_that_refuses_this_driver_is_said_to_want_its_token(monkeypatch):
    """This Ray starts clusters with token authentication: a driver without RAY_AUTH_MODE=token is refused after its
    port answered, and Ray says only that it failed to connect."""
    import ray

    from trajforge.cluster import init_ray
    from trajforge.serving import connect

    def refused(**_):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379. Please check the address.")

    monkeypatch.setattr(ray, "init", refused)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ServeStartError, match=r"Failed to connect to Ray cluster at 10\.0\.0\.1:6379: .*`export RAY_AUTH_MODE=token`"):
        connect("auto")
    with pytest.raises(ConfigError, match=r"wants an authentication token .*`export RAY_AUTH_MODE=token`"):
        init_ray("auto")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(ConfigError) as refused_with_token:
        init_ray("auto")
    assert "export RAY_AUTH_MODE" not in str(refused_with_token.value) and "~/.ray/auth_token" in str(refused_with_token.value)


@pytest.mark.parametrize("flags, environ", [(["--detach"], {"RAY_ADDRESS": "local"}), (["--stop"], {"RAY_ADDRESS": "local"}),
                                             (["--stop", "--address", "local"], {"RAY_ADDRESS": ""})])
def test_detach_or_stop_where_this_command_would_start_its_own_ray_is_refused(flags, environ, tmp_path):
    """RAY_ADDRESS=local would start a Ray that dies with the command, taking the "detached" applications with it."""
    import os

    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "trajforge", "serve", "--config", str(_config(tmp_path, free_port(), "local-probe")),
                             *flags], cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, **environ})
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    [line] = result.stderr.splitlines()
    assert f"trajforge serve: {flags[0]} needs a running Ray cluster" in line and "run `ray start --head` first" in line
    assert "RAY_ADDRESS=local" in line and result.stdout == ""
    assert time.monotonic() - started < 30  # refused before any Ray starts


def test_the_ray_to_join_follows_ray_address_and_auto(monkeypatch):
    from trajforge.cluster import ray_to_join

    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert ray_to_join("auto") is None and ray_to_join(None) is None and ray_to_join("local") is None
    assert ray_to_join("10.0.0.1:6379") == "10.0.0.1:6379" and ray_to_join("ray://head:10001") == "ray://head:10001"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")
    assert ray_to_join("auto") == ray_to_join(None) == "10.0.0.2:6379"


def test_detach_and_stop_together_are_refused_by_the_parser(capsys):
    from trajforge.cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--detach", "--stop"])
    assert "not allowed with argument" in capsys.readouterr().err


PROBE_APP = """
from ray import serve

@serve.deployment(ray_actor_options={"num_cpus": 0})
class Probe:
    def __call__(self, request):
        return "probe"
"""


def _probe(name: str) -> None:
    from ray import serve

    namespace: dict = {}
    exec(PROBE_APP, namespace)
    serve.run(namespace["Probe"].bind(), name=name, route_prefix=f"/{name}")


def test_stop_removes_what_detach_left_and_leaves_a_running_foreground_serves_applications(serve_url, tmp_path):
    """--stop says which it stops (Serve drains each first, 30 s with direct ingress), after the Ray it joined."""
    import ray
    from ray import serve

    from trajforge.serving import forget_owner, record_owner

    names = ["stop-foreground", "stop-detached", "stop-killed-foreground"]
    for name in names:
        _probe(name)
    record_owner("stop-foreground", detached=False)  # this test's driver, alive: a foreground `trajforge serve`
    record_owner("stop-detached", detached=True)
    ray.experimental.internal_kv._internal_kv_put(b"stop-killed-foreground", b"job:7f000000", namespace="trajforge_serve")
    config = {"http_options": {"host": "127.0.0.1", "port": int(serve_url.rsplit(":", 1)[1])},
              "applications": [{"name": name, "route_prefix": f"/{name}", "import_path": "serve_apps.ingest.app:build_app"} for name in names]}
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    try:
        stop = _serve(tmp_path / "serve.yaml", "--stop")
        assert stop.wait(timeout=120) == 0
        printed = [line for line in stop.stdout.read().splitlines() if not line.startswith(("INFO", "["))]
        assert printed[0] == f"Ray: joining the cluster at {ray.get_runtime_context().gcs_address}"
        assert "stopping stop-detached: Serve drains its replicas first (with direct ingress up to 30 s)..." in printed
        assert "removed stop-detached, stop-killed-foreground" in printed
        assert any(line.startswith("left stop-foreground running: a `trajforge serve` still running in the foreground") for line in printed)
        running = serve.status().applications
        assert "stop-foreground" in running and not {"stop-detached", "stop-killed-foreground"} & set(running)
    finally:
        for name in names:
            forget_owner(name)
            if name in serve.status().applications:
                serve.delete(name)


LEAVE_WHAT_DETACH_TOOK = PROBE_APP + """
import sys
import ray
from trajforge import serving

ray.init(address=sys.argv[1], logging_level="ERROR")
serve.run(Probe.bind(), name="taken-probe", route_prefix="/taken-probe")
serving.record_owner("taken-probe", detached=False)
serving.record_owner("taken-probe", detached=True)  # a `trajforge serve --detach` deployed over it since
serving.shutdown(["taken-probe"])
"""


def test_a_foreground_serve_leaves_the_applications_a_later_detach_deployed_over_its_own(serve_url):
    import ray
    from ray import serve

    from trajforge.serving import forget_owner

    try:
        result = subprocess.run([sys.executable, "-c", LEAVE_WHAT_DETACH_TOOK, ray.get_runtime_context().gcs_address],
                                capture_output=True, text=True, timeout=120, cwd=REPO)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "leaving taken-probe running: another `trajforge serve` deployed over this command's" in result.stderr
        assert serve.status().applications["taken-probe"].status == "RUNNING"
    finally:
        forget_owner("taken-probe")
        if "taken-probe" in serve.status().applications:
            serve.delete("taken-probe")


def test_the_help_says_which_ray_it_uses_and_how_to_leave_it_running(capsys):
    from trajforge.cli.main import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "until Ctrl-C, or --detach on a running cluster" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Default: $RAY_ADDRESS, else a cluster running on this machine, else a local Ray" in text
    assert "`trajforge serve --stop` removes them" in text and "closing its terminal removes its applications" in text
    assert "those a `trajforge serve` still running in the foreground deployed are left to it" in text
    assert "refused where this command would start a Ray of its own, as with RAY_ADDRESS=local" in text
