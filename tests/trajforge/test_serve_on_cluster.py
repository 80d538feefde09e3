"""`trajforge serve` against a running Ray cluster (the session's Ray stands in for `ray start --head`): it refuses
an HTTP host or port that the running Serve would ignore, names an address where no cluster answers, stays up
until SIGHUP (a closed terminal) and then removes only its own applications, and with --detach leaves them running
until `--stop`."""

from __future__ import annotations

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

from trajforge.errors import ServeStartError

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
    with pytest.raises(ServeStartError, match=rf"HTTP proxy on 127.0.0.1:{port}.*`serve shutdown`"):
        check_running_serve("127.0.0.1", port + 1, ["not-deployed"])
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
    from ray import serve

    port = int(serve_url.rsplit(":", 1)[1])
    process = _serve(_config(tmp_path, port + 1, "ingest"))
    assert process.wait(timeout=120) == 2
    assert f"Serve already runs on this Ray cluster with its HTTP proxy on 127.0.0.1:{port}" in process.stdout.read()
    assert serve.status().applications["ingest"].status == "RUNNING"
    assert httpx.get(f"{serve_url}/health", timeout=10).status_code == 200


def test_replacing_a_running_application_is_said(serve_url, caplog):
    from trajforge.serving import check_running_serve

    port = int(serve_url.rsplit(":", 1)[1])
    with caplog.at_level("WARNING", logger="trajforge.serving"):
        check_running_serve("127.0.0.1", port, ["ingest", "not-deployed"])
    assert "replacing the running application(s) ingest on this cluster" in caplog.text


@pytest.mark.parametrize("command", [["serve"], ["serve", "--stop"], ["queue", "status", "some-queue"]])
def test_an_address_where_no_cluster_answers_fails_at_once(command):
    port, started = free_port(), time.monotonic()
    result = subprocess.run([sys.executable, "-m", "trajforge", *command, "--address", f"127.0.0.1:{port}"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"no Ray cluster answers at --address 127.0.0.1:{port}" in result.stderr
    assert time.monotonic() - started < 30  # Ray alone retried such an address for minutes


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
    with pytest.raises(ServeStartError, match=r"Could not find any running Ray instance\. \(start one with `ray start --head`\)"):
        connect("auto")


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
