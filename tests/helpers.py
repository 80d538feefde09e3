"""Builders of protocol objects for tests (plain functions, imported by test modules)."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trajforge.client import IngestClient, Session, contributor_id_for

CONTRIBUTOR = contributor_id_for("tester")
EVENTS_KEY = "starcode-company-key"  # the key the session's main ingest app takes on POST /v1/events
REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
JOB_EXCLUDES = json.dumps({"excludes": [".venv", ".git", "lake", "models", ".carry", ".sandbox", "logs", "reports", "runs"]})


def steps(count: int, start: int = 1, kinds: tuple[str, ...] = ("thought", "action", "observation"), base: float | None = None) -> list[dict[str, Any]]:
    base = time.time() - 120 if base is None else base
    return [
        {"step": start + i, "type": kinds[i % len(kinds)], "timestamp": round(base + i * 0.731, 3), "content": f"step {start + i}: did a thing", "token_count": 40 + i}
        for i in range(count)
    ]


def open_session(client: IngestClient, model: str = "gpt-5.5", machine: str | None = None) -> Session:
    return client.open_session(provider="codex", model=model, contributor_id=CONTRIBUTOR, machine=machine or uuid.uuid4().hex)


def post(http, path: str, body: bytes):
    response = http.post(path, content=body, headers={"content-type": "application/json"})
    return response.status_code, response.json()


def free_port() -> int:
    """A free port for a server a test starts, from 20000-29999: below the kernel's ephemeral range (where Ray's
    own processes take random ports, one of which once took a test's Serve port before its proxy bound it) and
    above Ray's worker ports (10002-19999)."""
    for port in random.sample(range(20000, 30000), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29999")


def actor_repr_names(actors: list, timeout_s: float = 30.0) -> list[str]:
    """The repr Ray's GCS holds for each actor (what the dashboard's Repr column reads and its log lines' prefix), once each
    has one or after `timeout_s`: Ray records it when the actor's constructor has returned."""
    import ray
    from ray.core.generated import gcs_pb2

    accessor = ray._private.state.state._connect_and_get_accessor()
    deadline = time.monotonic() + timeout_s
    while True:
        names = [gcs_pb2.ActorTableData.FromString(accessor.get_actor_info(actor._actor_id)).repr_name for actor in actors]
        if all(names) or time.monotonic() > deadline:
            return names
        time.sleep(0.5)


@contextlib.contextmanager
def in_process_ingest(settings) -> Iterator[Any]:
    """The ingest service built in this process behind Starlette's TestClient (no Ray, no Serve), shut down after: its
    requests only, no lifespan events (the client is not entered)."""
    from starlette.requests import Request
    from starlette.testclient import TestClient

    from serve_apps.ingest.service import IngestService

    service = IngestService(settings)

    async def app(scope, receive, send):
        response = await service(Request(scope, receive))
        await response(scope, receive, send)

    client = TestClient(app, base_url="http://ingest.test")
    try:
        yield client
    finally:
        client.close()
        service.shutdown()
