"""Running a job on Ray: one `PeerWorker` actor per peer whose range is not complete, each generating only its range;
the driver holds the job's run lock (an actor is let go as soon as its range is done, so peers that the
cluster cannot hold at once run in turn), shows one progress bar over the job's records, keeps the job base's totals in
step with the peers' states, and marks the job succeeded when every peer finished (failed when a peer's worker
died, with the reason). A job whose run was killed is resumed by running it again: the peers go on after the
records their results files hold."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from pipelines.synth_records.results import read_results
from pipelines.synth_records.settings import SynthRecordsSettings
from pipelines.synth_records.store import JobFiles, now, refresh_metrics
from trajforge.errors import TrajforgeError

log = logging.getLogger("trajforge.synth_records")
POLL_S = 0.5


class JobBusy(TrajforgeError, RuntimeError):
    """Another live process runs this job."""


@contextmanager
def run_lock(files: JobFiles) -> Iterator[None]:
    """The job's run lock (an flock, dropped by the kernel when its holder dies, even by SIGKILL)."""
    fd = os.open(files.run_lock, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobBusy(f"job {files.id} is being run by another process (it holds {files.run_lock})") from None
        yield
    finally:
        os.close(fd)


def is_running(files: JobFiles) -> bool:
    """Whether a live process holds the job's run lock (a job marked running without one was killed: resume it)."""
    try:
        with run_lock(files):
            return False
    except JobBusy:
        return True


def _done_count(files: JobFiles, peers: list[str]) -> int:
    return sum(_lines(files.peer_results_path(peer)) for peer in peers)


def _lines(path: Any) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _totals(base: dict[str, Any], states: list[dict[str, Any]]) -> dict[str, Any]:
    ok, failed = sum(s["generatedOk"] for s in states), sum(s["generatedFailed"] for s in states)
    return {**base, "totalOk": ok, "totalFailed": failed, "totalGenerated": ok + failed}


def _ms_between(start: str, end: str) -> int:
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    return round((parse(end) - parse(start)).total_seconds() * 1000)


def _remaining_peers(files: JobFiles) -> list[str]:
    left = []
    for state in files.peer_states():
        have = read_results(files.peer_results_path(state["peerId"]))
        if any(index not in have for index in range(state["range"]["start"], state["range"]["end"])):
            left.append(state["peerId"])
    return left


def run_job(settings: SynthRecordsSettings, job_id: str, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the job to its end; its final job base."""
    files = JobFiles.existing(settings.lake, job_id)
    with run_lock(files):
        base = files.base()
        left = _remaining_peers(files)
        if not left and base["status"] == "succeeded":
            return base  # nothing left to do: a finished job stays as it finished
        base.update(status="running", jobStartedAt=base.get("jobStartedAt") or now(), jobFinishedAt=None, error=None)
        files.write_base(base)
        refresh_metrics(settings.lake)
        error = _run_peers(settings, files, left, base, progress) if left else None
        base = _totals(files.base(), files.peer_states())
        finished = now()
        base.update(status="failed" if error else "succeeded", jobFinishedAt=finished, error=error,
                    recordsDurationMs=_ms_between(base["jobStartedAt"], finished))
        files.write_base(base)
        refresh_metrics(settings.lake)
        return base


def _run_peers(settings: SynthRecordsSettings, files: JobFiles, peers: list[str], base: dict[str, Any], progress: bool) -> str | None:
    """Run the peers' actors until each has finished; the first worker's failure, or None."""
    import ray
    from tqdm import tqdm

    from pipelines.synth_records.peer import PeerWorker
    from trajforge.cluster import init_ray, warn_if_cpus_taken, warn_if_short

    init_ray()
    warn_if_cpus_taken(settings.peer_cpus, "synth_records.peer_cpus", "the peers")
    warn_if_short("GPU", settings.peer_gpus, "synth_records.peer_gpus", "the peers")
    worker = ray.remote(PeerWorker).options(num_cpus=settings.peer_cpus, num_gpus=settings.peer_gpus, max_restarts=0)
    actors = {peer: worker.remote(settings.model_dump(mode="json")) for peer in peers}
    pending = {actor.run.remote(files.id, peer): peer for peer, actor in actors.items()}
    error = None
    bar = tqdm(total=base["totalRecords"], initial=_done_count(files, base["peers"]), unit="record", desc=f"job {files.id}",
               disable=not progress, dynamic_ncols=True)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S)
            for ref in ready:
                peer = pending.pop(ref)
                try:
                    ray.get(ref)
                except Exception as exc:  # a worker's engine failed to load, its file was busy, its process died
                    lines = str(exc).strip().splitlines()  # Ray's text holds the worker's traceback: its last line says why
                    reason = f"{peer}: {type(exc).__name__}: {lines[-1] if lines else ''}"
                    error = error or reason
                    log.error("job %s: %s", files.id, reason)
                ray.kill(actors[peer])  # its CPUs (and GPUs) go to a peer still waiting for them: more peers than fit run in turn
            bar.update(_done_count(files, base["peers"]) - bar.n)
            current = _totals(files.base(), files.peer_states())
            if current["totalGenerated"] != base["totalGenerated"]:
                base = current
                files.write_base(base)
    finally:
        bar.close()
        for actor in actors.values():
            ray.kill(actor)
    return error
