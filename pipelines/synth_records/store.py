"""Where a job lives (seed 001's CStore keys and R1FS files, as files in the lake), each written atomically:

    <lake>/synth_records/jobs/<id>/job.json          the job base (status, totals, timestamps, durations)
    <lake>/synth_records/jobs/<id>/details.json      description, instructions, schema, inference
    <lake>/synth_records/jobs/<id>/peers/<peer>.json  a peer's state (its range, counts, errors), written by that peer
    <lake>/synth_records/jobs/<id>/peers/<peer>.jsonl a peer's results (`results.py`)
    <lake>/synth_records/metrics.json                the metrics over all jobs, rewritten when a job changes

The job base and the peer states are separate files, so the driver and the peers never overwrite each other's
(the seed's "update job base and peer states independently"). Field names are the seed's (camelCase)."""

from __future__ import annotations

import json
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trajforge.atomic import write_atomic
from trajforge.errors import TrajforgeError


class JobNotFound(TrajforgeError, LookupError):
    """No such job in this lake."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def root(lake: Path) -> Path:
    return Path(lake) / "synth_records"


def job_dir(lake: Path, job_id: str) -> Path:
    return root(lake) / "jobs" / job_id


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class JobFiles:
    """One job's files."""

    def __init__(self, lake: Path, job_id: str):
        self.lake, self.id, self.dir = Path(lake), job_id, job_dir(lake, job_id)

    @classmethod
    def existing(cls, lake: Path, job_id: str) -> JobFiles:
        files = cls(lake, job_id)
        if not files.base_path.exists():
            known = ", ".join(list_job_ids(lake)[-5:]) or "none"
            raise JobNotFound(f"no job {job_id!r} in {root(lake) / 'jobs'} (latest: {known})")
        return files

    @property
    def base_path(self) -> Path:
        return self.dir / "job.json"

    @property
    def details_path(self) -> Path:
        return self.dir / "details.json"

    @property
    def run_lock(self) -> Path:
        return self.dir / "run.lock"

    def peer_state_path(self, peer_id: str) -> Path:
        return self.dir / "peers" / f"{peer_id}.json"

    def peer_results_path(self, peer_id: str) -> Path:
        return self.dir / "peers" / f"{peer_id}.jsonl"

    def base(self) -> dict[str, Any]:
        return read_json(self.base_path)

    def details(self) -> dict[str, Any]:
        return read_json(self.details_path)

    def peer_state(self, peer_id: str) -> dict[str, Any]:
        return read_json(self.peer_state_path(peer_id))

    def peer_states(self) -> list[dict[str, Any]]:
        return [self.peer_state(peer) for peer in self.base()["peers"]]

    def write_base(self, base: dict[str, Any]) -> None:
        base["updatedAt"] = now()
        write_json(self.base_path, base)

    def write_peer_state(self, state: dict[str, Any]) -> None:
        write_json(self.peer_state_path(state["peerId"]), state)


def list_job_ids(lake: Path) -> list[str]:
    """The lake's jobs, oldest first (ids start with their creation time)."""
    jobs = root(lake) / "jobs"
    return sorted(path.parent.name for path in jobs.glob("*/job.json")) if jobs.is_dir() else []


def compute_metrics(lake: Path) -> dict[str, Any]:
    """The seed's metrics, over the lake's jobs: totalJobs, totalRecordsRequested, totalRecordsGenerated, activeJobs
    (queued or running), failedJobs, lastJobAt (the newest job's createdAt)."""
    bases = [JobFiles(lake, job_id).base() for job_id in list_job_ids(lake)]
    return {"totalJobs": len(bases), "totalRecordsRequested": sum(b["totalRecords"] for b in bases),
            "totalRecordsGenerated": sum(b["totalGenerated"] for b in bases),
            "activeJobs": sum(b["status"] in ("queued", "running") for b in bases),
            "failedJobs": sum(b["status"] == "failed" for b in bases),
            "lastJobAt": max((b["createdAt"] for b in bases), default=None)}


def refresh_metrics(lake: Path) -> dict[str, Any]:
    metrics = compute_metrics(lake)
    write_json(root(lake) / "metrics.json", metrics)
    return metrics
