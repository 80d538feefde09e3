"""`trajforge serve` as a user runs it: prints the URL, survives SIGKILL of its whole process tree, stops on SIGTERM;
with --direct-ingress the replicas answer on the ports it prints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import free_port, open_session, steps
from raw_lake import stored_hmacs

from trajforge.client import IngestClient

REPO = Path(__file__).resolve().parents[2]


def _start(lake: Path, port: int, *flags: str) -> tuple[subprocess.Popen, list[str]]:
    """The CLI running, and what it printed up to its URL line and the application lines below it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trajforge", "serve", "--port", str(port), "--lake", str(lake), *flags,
         "--set", "ingest.rate_limits.per_address_per_minute=0", "--set", "ingest.rate_limits.per_address_per_hour=0",
         "--set", "ingest.rate_limits.sessions_per_machine_per_hour=0", "--set", "ingest.rate_limits.envelopes_per_session=0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 180
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if "Ctrl-C" in line:
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
            return process, lines
    raise AssertionError("trajforge serve did not print its URL:\n" + "".join(lines[-40:]))


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the CLI and every process of its session (Ray's GCS, raylet, workers, replicas)."""
    subprocess.run(["pkill", "-9", "-s", str(process.pid)], check=False)
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True).stdout:
        time.sleep(0.2)


@pytest.mark.slow
def test_sigkill_of_the_whole_service_then_restart_with_direct_ingress(tmp_path, embedder):
    lake, port = tmp_path / "lake", free_port()
    url = f"http://127.0.0.1:{port}"
    process, _ = _start(lake, port)
    acked: dict[str, str] = {}
    try:
        with IngestClient(url, max_retries=0) as client:
            sessions = [open_session(client) for _ in range(4)]
        stop = threading.Event()

        def hammer(session):
            with httpx.Client(base_url=url, timeout=10) as http:
                while not stop.is_set():
                    body = session.chunk(steps(2, start=2 * session.sequence + 1))
                    try:
                        response = http.post("/v1/training/ingest", content=body)
                    except httpx.TransportError:
                        return
                    if response.status_code == 200:
                        acked[json.loads(body)["attestation"]["session_hmac"]] = response.json()["envelope_id"]

        workers = [threading.Thread(target=hammer, args=(session,)) for session in sessions]
        for worker in workers:
            worker.start()
        while len(acked) < 40:
            time.sleep(0.02)
        _kill_tree(process)
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    finally:
        if process.poll() is None:
            _kill_tree(process)

    counts = stored_hmacs(lake)
    assert all(counts[hmac] == 1 for hmac in acked)
    # The restart also lets the replicas answer HTTP themselves (Serve's direct ingress).
    process, printed = _start(lake, port, "--direct-ingress")
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            summary = http.get("/v1/stats/summary").json()
            assert summary["totalEnvelopes"] == sum(stored_hmacs(lake).values()) >= len(acked)
        direct = [line.split("direct: ")[1].strip().rstrip("/") for line in printed if "direct: " in line]
        [ingest_url] = [found for found in direct if not found.endswith(("/v1/embed", "/generate"))]
        [embed_url] = [found for found in direct if found.endswith("/v1/embed")]
        [generate_url] = [found for found in direct if found.endswith("/generate")]
        assert port not in {httpx.URL(found).port for found in (ingest_url, embed_url, generate_url)}  # not the proxy's
        # The OpenAI-compatible front is part of the default config, on the embedded model.
        assert httpx.get(f"{generate_url}/v1/models", timeout=30).json()["data"][0]["id"] == "small-qwen3"
        assert httpx.get(f"{ingest_url}/v1/stats/summary", timeout=30).json() == summary
        deadline = time.monotonic() + 120
        while not httpx.get(embed_url, timeout=30).json()["ready"] and time.monotonic() < deadline:
            time.sleep(0.5)
        text = "Terraform plan replaces the node group"
        answer = httpx.post(embed_url, json={"input": text}, timeout=60)
        assert answer.status_code == 200
        assert np.allclose(answer.json()["data"][0]["embedding"], embedder.embed([text])[0], atol=1e-5)
        # SIGTERM stops it cleanly.
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            _kill_tree(process)


@pytest.mark.slow
def test_plain_serve_run_of_the_config_file_honours_the_variables(tmp_path):
    """`serve run configs/serve.yaml` (Ray Serve's own CLI) deploys the same app; TRAJFORGE__ variables apply."""
    import yaml

    port = free_port()
    config = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    config["http_options"]["port"] = port
    config_path = tmp_path / "serve.yaml"
    config_path.write_text(yaml.safe_dump(config))
    lake = tmp_path / "env-lake"
    environ = dict(os.environ, TRAJFORGE__INGEST__LAKE=str(lake), TRAJFORGE__INGEST__RATE_LIMITS__PER_ADDRESS_PER_MINUTE="5")
    environ.pop("FORWARDED_ALLOW_IPS", None)  # Serve's proxy as `serve run` starts it: uvicorn's default, this host trusted
    process = subprocess.Popen([str(Path(sys.executable).parent / "serve"), "run", str(config_path)], cwd=REPO, env=environ,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        from trajforge.serving import wait_healthy

        wait_healthy(f"http://127.0.0.1:{port}", 180)
        with IngestClient(f"http://127.0.0.1:{port}", max_retries=0) as client:
            assert open_session(client).send_chunk(steps(2))["status"] == 200
        assert (lake / "registry" / "ingest.db").exists()
        # This Ray's Serve proxy applies X-Forwarded-For from this host itself (uvicorn's default); the ingest app, which
        # trusts no proxy, still keeps such requests in one window: a client cannot pick a fresh address per request.
        statuses = [httpx.get(f"http://127.0.0.1:{port}/health", headers={"x-forwarded-for": f"10.7.0.{i}"}).status_code for i in range(6)]
        assert statuses == [200] * 5 + [429]
    finally:
        _kill_tree(process)


def test_without_direct_ingress_there_are_no_direct_endpoints(serve_url):
    from trajforge.serving import direct_endpoints

    port = int(serve_url.rsplit(":", 1)[1])
    assert direct_endpoints("127.0.0.1", port) == {}


def test_a_controller_that_cannot_name_replica_ports_gives_none_and_a_warning(serve_url, monkeypatch, caplog):
    from ray.serve.context import _get_global_client

    from trajforge.serving import direct_endpoints

    class OldController:
        """A Serve controller from before target groups existed."""

    monkeypatch.setattr(_get_global_client(), "_controller", OldController())
    with caplog.at_level("WARNING", logger="trajforge.serving"):
        assert direct_endpoints("127.0.0.1", 8000) == {}
    assert "could not ask Serve for the replicas' own ports" in caplog.text


JOIN_AND_LEAVE = """
import sys
import ray
from ray import serve
from trajforge import serving

ray.init(address=sys.argv[1], logging_level="ERROR")

@serve.deployment(ray_actor_options={"num_cpus": 0})
class Probe:
    def __call__(self, request):
        return "probe"

serve.run(Probe.bind(), name="probe", route_prefix="/probe-of-another-driver")
print("started here:", serving.started_ray_here(), flush=True)
serving.shutdown(["probe"])
"""


def test_a_driver_that_joined_a_cluster_removes_only_its_own_applications(serve_url):
    """On a shared Ray head node, stopping `trajforge serve --address ...` must not take Serve down for everyone."""
    import ray
    from ray import serve

    from trajforge.serving import started_ray_here

    assert started_ray_here()  # the session's Ray was started by this process
    before = set(serve.status().applications)
    result = subprocess.run([sys.executable, "-c", JOIN_AND_LEAVE, ray.get_runtime_context().gcs_address],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "started here: False" in result.stdout
    after = serve.status().applications
    assert "probe" not in after and set(after) == before
    assert all(status.status == "RUNNING" for status in after.values())
    assert httpx.get(f"{serve_url}/health", timeout=10).status_code == 200


def test_relative_paths_of_the_config_are_taken_from_the_folder_serve_runs_in(tmp_path, monkeypatch):
    """A replica on a `ray start --head` cluster works in the folder `ray start` ran in; `./lake` means the one here."""
    from trajforge.cli import serve_cmd
    from trajforge.cli.common import merge_assignments
    from trajforge.cli.main import build_parser

    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints" / "mine").mkdir(parents=True)
    args = build_parser().parse_args(["serve", "--set", "ingest.key_file=keys/ingest.key", "--set", "generate.model=checkpoints/mine"])
    serve_file = serve_cmd.load(merge_assignments(args))
    ingest, embed, generate = (serve_file.app(name).args for name in ("ingest", "embed", "generate"))
    assert ingest["lake"] == str(tmp_path / "lake") and ingest["key_file"] == str(tmp_path / "keys" / "ingest.key")
    assert generate["model"] == str(tmp_path / "checkpoints" / "mine") and embed["model"] == "packaged"  # a name, not a folder here
    args = build_parser().parse_args(["serve", "--lake", "data/lake", "--set", "generate.model=small"])
    serve_file = serve_cmd.load(merge_assignments(args))
    assert serve_file.app("ingest").args["lake"] == str(tmp_path / "data" / "lake") and serve_file.app("generate").args["model"] == "small"


def test_serve_reads_the_checkouts_config_as_every_command_does_not_one_in_the_folder_it_runs_in(tmp_path, monkeypatch):
    """Every command reads its file from the checkout's configs/ unless --config names another: a configs/serve.yaml in
    the working folder (another project's Ray Serve config, a stale copy) was taken by serve alone, without a word."""
    import yaml

    from trajforge.cli import serve_cmd
    from trajforge.cli.common import merge_assignments
    from trajforge.cli.main import build_parser

    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    stray = {"http_options": {"port": 8123}, "applications": [{"name": "other", "route_prefix": "/", "import_path": "other:app"}]}
    (tmp_path / "configs" / "serve.yaml").write_text(yaml.safe_dump(stray))
    serve_file = serve_cmd.load(merge_assignments(build_parser().parse_args(["serve"])))
    assert serve_file.http_options.port == 8000 and [app.name for app in serve_file.applications] == ["ingest", "embed", "generate"]
    given = serve_cmd.load(merge_assignments(build_parser().parse_args(["serve", "--config", "configs/serve.yaml"])))
    assert given.http_options.port == 8123 and [app.name for app in given.applications] == ["other"]


def test_a_bad_application_arg_is_said_before_any_word_of_a_ray():
    # its own process: `trajforge serve` shuts down the Ray it ran with, which in-process is the session's
    environ = dict(os.environ, RAY_ADDRESS="local")
    result = subprocess.run([sys.executable, "-m", "trajforge", "serve", "--set", "ingest.num_replicas=abc"], cwd=REPO,
                            env=environ, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "ingest.num_replicas (set by --set ingest.num_replicas)" in result.stderr
    assert "Ray:" not in result.stdout  # it was "Ray: starting a local Ray ..." though none was started


@pytest.mark.parametrize("apps", ["", " , "])
def test_an_apps_that_names_no_application_is_refused_not_read_as_all_of_them(apps):
    """`--apps ""` (an unset variable in a script) deployed every application of the config."""
    from trajforge.cli import serve_cmd
    from trajforge.cli.common import merge_assignments
    from trajforge.cli.main import build_parser
    from trajforge.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"--apps '{apps}' names no application: give some of ingest,embed,generate, or leave --apps out"):
        serve_cmd.load(merge_assignments(build_parser().parse_args(["serve", "--apps", apps])))
