"""Ingest throughput, with its baselines measured in the same run.

    python -m benchmarks.ingest [--seconds 8] [--concurrency 32]

Measures, for 1 KB and 8 KB envelopes:
  - the single endpoint (`/v1/training/ingest`) at concurrency 32, against a bare Serve echo deployment
    on the same Serve instance (the HTTP floor): target single >= 0.7x echo requests/s;
  - the single endpoint straight to the ingest replica's own port (Serve's direct ingress, as
    `trajforge serve --direct-ingress` runs it), skipping the proxy;
  - the batch endpoint (`/v1/training/ingest:batch`, 500 envelopes a request): target >= 5,000 envelopes/s for 1 KB;
  - the same work in a plain in-process loop (parse, validate, verify, durable append): the per-core limit.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import socket
import tempfile
import time
from pathlib import Path

from benchmarks.load import run_load

NO_LIMITS = {"per_address_per_minute": 0, "per_address_per_hour": 0, "sessions_per_machine_per_hour": 0, "envelopes_per_session": 0}
WORDS = "refactor the handler so the retry path closes its connection before the next attempt and log the status".split()


def _steps(count: int, chars: int, base: float, start: int, rng: random.Random) -> list[dict]:
    steps = []
    for index in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(chars // 6))[:chars]
        step = {"step": start + index, "type": ("thought", "action", "observation")[index % 3], "timestamp": round(base + index * 0.517, 3), "content": text, "token_count": len(text) // 4}
        if step["type"] == "action":
            step.update(tool="command_execution", arguments={"command": "pytest -q tests/test_api.py"})
        steps.append(step)
    return steps


def _embedding(rng: random.Random) -> list[float]:
    vector = [rng.gauss(0, 1) for _ in range(384)]
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


def http_sessions(url: str, count: int) -> list:
    """Sessions opened over HTTP (ECDH with the service)."""
    from trajforge.client import IngestClient, contributor_id_for

    with IngestClient(url, max_retries=3) as client:
        return [client.open_session(provider="codex", model="gpt-5.5", contributor_id=contributor_id_for(f"bench{i % 8}"), machine=f"{i:064x}") for i in range(count)]


def store_sessions(store, count: int) -> list:
    """Sessions opened directly on an EnvelopeStore, for the in-process loop."""
    from trajforge import crypto
    from trajforge.client import Session, contributor_id_for
    from trajforge.contracts.requests import SessionOpenRequest

    sessions = []
    for index in range(count):
        public, private = crypto.generate_keypair()
        request = SessionOpenRequest(session_id=f"sess_local_{index}", public_key=public, provider="codex", model="gpt-5.5", machine_fingerprint=f"{index:064x}", app_version_hash="a" * 64, groove_version="0.27.113")
        server_public = store.open_session(request).body["server_public_key"]
        sessions.append(Session(None, request.session_id, crypto.derive_shared_secret(private, server_public), contributor_id_for("bench"), "a" * 64, "codex", "gpt-5.5"))
    return sessions


def sign_bodies(sessions: list, count: int, kilobytes: int) -> list[bytes]:
    """`count` signed CHUNK envelopes of about `kilobytes` KB, round-robin over `sessions`, in sequence order."""
    rng = random.Random(kilobytes)
    base = time.time() - 300
    bodies = []
    for index in range(count):
        session = sessions[index % len(sessions)]
        metadata = {"agent_role": "backend", "agent_id": "backend-1", "team_size": 1, "task_complexity": "medium"}
        if kilobytes >= 8:  # a 384-float session embedding (about 7.5 KB) and a few steps
            metadata["session_embedding"] = {"model": "sentence-transformers/all-MiniLM-L6-v2", "vector": _embedding(rng), "source_text": "backend retry handler"}
            steps = _steps(2, 80, base, session.chunk_sequence * 2 + 1, rng)
        else:
            steps = _steps(3, 110, base, session.chunk_sequence * 3 + 1, rng)
        bodies.append(session.chunk(steps, metadata))
    return bodies


def in_process(count: int, kilobytes: int, group: int = 500) -> float:
    """Envelopes/s of parse + validate + verify + durable group commit in this process, on a fresh lake."""
    from serve_apps.ingest.settings import IngestSettings
    from serve_apps.ingest.store import EnvelopeStore
    from serve_apps.ingest.verify import Candidate, verify
    from trajforge.jsjson import loads_strict

    with tempfile.TemporaryDirectory() as lake:
        store = EnvelopeStore(IngestSettings(lake=Path(lake), rate_limits=NO_LIMITS))
        bodies = sign_bodies(store_sessions(store, 64), count, kilobytes)
        started = time.perf_counter()
        accepted = 0
        for start in range(0, len(bodies), group):
            candidates = []
            for body in bodies[start : start + group]:
                checked = verify(loads_strict(body), body, "bench", store.secret_of)
                if isinstance(checked, Candidate):
                    candidates.append(checked)
            accepted += sum(1 for verdict in store.commit(candidates) if verdict.status == 200)
        elapsed = time.perf_counter() - started
        store.close()
    if accepted != len(bodies):
        raise RuntimeError(f"in-process loop accepted {accepted} of {len(bodies)} envelopes")
    return accepted / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each HTTP measurement (default 8)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--batch", type=int, default=500, help="envelopes per batch request (default 500)")
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from benchmarks import echo_app
    from serve_apps.ingest.app import build_app
    from trajforge.serving import DIRECT_INGRESS_ENV, direct_endpoints, wait_healthy

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    lake = tempfile.mkdtemp(prefix="trajforge-bench-")
    # Replicas import benchmarks.echo_app: put the repository on their path.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))
    for name, value in DIRECT_INGRESS_ENV.items():  # the ingest replica also answers on its own port: measured too
        os.environ.setdefault(name, value)
    ray.init(logging_level="ERROR", log_to_driver=False, include_dashboard=False)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"lake": lake, "rate_limits": NO_LIMITS}), name="ingest", route_prefix="/")
        serve.run(echo_app.build(256), name="echo", route_prefix="/echo")
        wait_healthy(url, 120)
        direct_url = (direct_endpoints("127.0.0.1", port).get("ingest") or [url])[0]
        for kilobytes in (1, 8):
            expected_rate = 6000 if kilobytes == 1 else 2000
            bodies = sign_bodies(http_sessions(url, 64), int(expected_rate * args.seconds * 1.5), kilobytes)
            size = sum(map(len, bodies)) / len(bodies)
            echo = run_load(f"{url}/echo", bodies, args.concurrency, args.seconds)
            single = run_load(f"{url}/v1/training/ingest", bodies, args.concurrency, args.seconds)
            direct = run_load(f"{direct_url}/v1/training/ingest", bodies[single.requests :], args.concurrency, args.seconds)
            remaining = bodies[single.requests + direct.requests :]
            batches = [b"[" + b",".join(remaining[i : i + args.batch]) + b"]" for i in range(0, len(remaining) - args.batch + 1, args.batch)]
            batch = run_load(f"{url}/v1/training/ingest:batch", batches, min(args.concurrency, 4), args.seconds)
            local = in_process(min(len(bodies), 20000), kilobytes)
            rows.append((kilobytes, size, echo, single, direct, batch, local))
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(lake, ignore_errors=True)  # the benchmark's own lake: nothing left in /tmp

    print(f"\ningest benchmark: concurrency {args.concurrency}, {args.seconds:.0f} s per HTTP run, batch of {args.batch}")
    print(f"direct: {direct_url} (the ingest replica's own port, Serve's direct ingress; {'on' if direct_url != url else 'off, so the proxy again'})")
    print(f"{'envelope':>9} {'echo req/s':>11} {'single env/s':>13} {'single/echo':>12} {'direct env/s':>13} {'batch env/s':>12} {'in-process env/s':>17} {'batch/in-proc':>14}")
    for kilobytes, size, echo, single, direct, batch, local in rows:
        batch_rate = batch.per_second * args.batch
        print(
            f"{size / 1024:>7.1f}KB {echo.per_second:>11.0f} {single.per_second:>13.0f} {single.per_second / echo.per_second:>11.2f}x"
            f" {direct.per_second:>13.0f} {batch_rate:>12.0f} {local:>17.0f} {batch_rate / local:>13.2f}x"
        )
        bad = {status: n for status, n in (single.statuses | direct.statuses | batch.statuses).items() if status != 200}
        if bad:
            print(f"           non-200 answers: {bad}")
    one_kb = rows[0]
    print(f"\ntargets: single >= 0.70x echo: {one_kb[3].per_second / one_kb[2].per_second:.2f}x; batch (1 KB) >= 5000 env/s: {one_kb[5].per_second * args.batch:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
