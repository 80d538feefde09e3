"""Durability: SIGKILL of the replica mid-load, restart persistence, torn tails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import httpx
import psutil
from helpers import open_session, steps
from raw_lake import stored_hmacs

from trajforge.client import IngestClient


def _replica_pids(app: str) -> list[int]:
    """PIDs of the app's replica processes (Ray titles them `ray::ServeReplica:<app>:<deployment>`) in this
    test session's Ray, which runs under this process: another session's replicas on the machine are not ours."""
    found = subprocess.run(["pgrep", "-f", f"ray::ServeReplica:{app}:"], capture_output=True, text=True).stdout
    ours = {child.pid for child in psutil.Process().children(recursive=True)}
    return sorted(int(pid) for pid in found.split() if int(pid) in ours)


def _hammer(url: str, sessions, acked: dict, stop: threading.Event, unexpected: list) -> None:
    """Send chunks one session after another; resend the same body until it gets a 200."""
    with httpx.Client(base_url=url, timeout=30) as http:
        for session in sessions:
            while not stop.is_set():
                body = session.chunk(steps(3, start=session.sequence * 3 + 1))
                while not stop.is_set():
                    try:
                        response = http.post("/v1/training/ingest", content=body)
                        if response.status_code == 200:
                            acked[json.loads(body)["attestation"]["session_hmac"]] = response.json()
                            break
                        if response.status_code < 500:
                            unexpected.append(response.text)
                    except httpx.TransportError:
                        pass
                    time.sleep(0.05)
                if session.sequence >= 40:
                    break


def test_sigkill_mid_load_loses_and_doubles_nothing(serve_url, lakes):
    url = serve_url + "/crash"
    with IngestClient(url, max_retries=0) as client:
        sessions = [[open_session(client) for _ in range(3)] for _ in range(6)]
    acked: dict[str, dict] = {}
    stop = threading.Event()
    unexpected: list[str] = []
    workers = [threading.Thread(target=_hammer, args=(url, group, acked, stop, unexpected), daemon=True) for group in sessions]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        [pid] = _replica_pids("crash")
        os.kill(pid, signal.SIGKILL)
        acked_at_kill = len(acked)
        time.sleep(20)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=120)
    assert not unexpected, unexpected[:3]
    assert len(acked) > acked_at_kill, "no envelope was acknowledged after the restart"
    assert _replica_pids("crash") and _replica_pids("crash") != [pid]
    counts = stored_hmacs(lakes["crash"])
    assert all(counts[hmac] == 1 for hmac in acked), [h for h in acked if counts[h] != 1][:3]
    assert max(counts.values()) == 1
    # After the restart every acknowledged envelope is known: a resend is a duplicate with the same id.
    with httpx.Client(base_url=url, timeout=30) as http:
        summary = http.get("/v1/stats/summary").json()
        assert summary["totalEnvelopes"] == sum(counts.values())


def test_state_survives_a_restart_of_the_replica(serve_url, lakes):
    url = serve_url + "/crash"
    with IngestClient(url, max_retries=0) as client:
        session = open_session(client)
        body = session.chunk(steps(2))
        first = client._request("POST", "/v1/training/ingest", body)[1]
        for pid in _replica_pids("crash"):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                status, answer = client._request("POST", "/v1/training/ingest", body)
                if status == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert answer["duplicate"] is True and answer["envelope_id"] == first["envelope_id"]
        assert session.send_chunk(steps(2, start=3))["status"] == 200  # the secret was kept, sealed, in the registry
