"""A peer: one Ray actor per range of a job (seed 001's replicas, each working only its assigned slice). It loads
its engine once, generates the records of its range that its results file does not hold yet, in index order, one
call each, appends each result as it comes (`results.py`), and writes its state every K records and at its end
(then with its `resultCid`, the results file's place in the job's folder, as the job base's `jobDetailsCid` names
`details.json`: the seed's R1FS ids are files here)."""

from __future__ import annotations

from typing import Any

from pipelines.synth_records.generate import generate_record
from pipelines.synth_records.results import ResultsWriter
from pipelines.synth_records.settings import SynthRecordsSettings
from pipelines.synth_records.store import JobFiles, now

MAX_ERRORS_KEPT = 1000


def counted(state: dict[str, Any], done: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """`state` with its counts and errors as the results of its range say (recounted, so a resumed peer's state
    matches its file whatever the last state written before a kill said)."""
    start, end = state["range"]["start"], state["range"]["end"]
    mine = [done[index] for index in sorted(done) if start <= index < end]
    errors = [{"index": record["i"], "message": record.get("error", "")} for record in mine if not record.get("ok")]
    return {**state, "generatedOk": sum(bool(record.get("ok")) for record in mine), "generatedFailed": len(errors),
            "errors": errors[:MAX_ERRORS_KEPT], "lastUpdateAt": now()}


def result_cid(files: JobFiles, peer_id: str) -> str:
    """The seed's `resultCid` (its results' R1FS id): here the results file's place in the job's folder."""
    return files.peer_results_path(peer_id).relative_to(files.dir).as_posix()


def run_peer(engine: Any, files: JobFiles, peer_id: str, settings: SynthRecordsSettings) -> dict[str, Any]:
    """Generate what is left of `peer_id`'s range; its final state."""
    details, total = files.details(), files.base()["totalRecords"]
    state = files.peer_state(peer_id)
    start, end = state["range"]["start"], state["range"]["end"]
    with ResultsWriter(files.peer_results_path(peer_id), settings.lock_wait_s) as results:
        state = counted({**state, "startedAt": state.get("startedAt") or now(), "finishedAt": None, "resultCid": None}, results.done)
        files.write_peer_state(state)
        since_update = 0
        for index in range(start, end):
            if index in results.done:
                continue
            results.append(generate_record(engine, details, index, total, settings))
            since_update += 1
            if since_update >= settings.update_every_k:
                state = counted(state, results.done)
                files.write_peer_state(state)
                since_update = 0
        state = counted({**state, "finishedAt": now(), "resultCid": result_cid(files, peer_id)}, results.done)
        files.write_peer_state(state)
    return state


class PeerWorker:
    """The Ray actor (made remote by the runner, with the configured CPUs and GPUs)."""

    def __init__(self, settings: dict[str, Any]):
        from actors.engines.factory import build_engine

        self.settings = SynthRecordsSettings.model_validate(settings)
        self.engine = build_engine(self.settings.actor_settings())

    def run(self, job_id: str, peer_id: str) -> dict[str, Any]:
        return run_peer(self.engine, JobFiles(self.settings.lake, job_id), peer_id, self.settings)
