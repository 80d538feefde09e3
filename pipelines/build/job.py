"""The build job: index the raw lake, process new sessions with Ray Data, deduplicate, write, publish.

    trajforge build [--lake ./lake] [--full] [--org ORG]
    ray job submit --working-dir . -- python -m pipelines.build --lake /shared/lake

1. Index every raw file in parallel Ray tasks (headers and record keys), and score every ingest
   session as columns, one task per CPU over its share of the sessions, while the driver chooses
   what to build (`index_stage`). A raw file unchanged since the parent build read it is not read
   again: its staged index and columns are linked and loaded (`index_reuse`).
2. Choose the sessions to build: ready ones (closed, or silent past the grace period) that the
   parent build (the newest earlier one with the same config and org) does not already hold with the same records.
   `--full` builds every session again. Teacher and actor runs are all built again when the processed datasets'
   test task ids (`held_out`) differ from the parent's; runs of those tasks are marked in their batch, their sft rows split test.
3. A Ray Data pipeline: `process_batch` tasks (stitch, redact, derive, score, rows -> staging), then
   the embedding stages (tokenizer tasks, an actor pool with the model) that also tag domains.
   Then the telemetry events' rows (`event_stage`: a Ray task per events file, each unchanged file's rows reused from the parent) and the public datasets' processed splits (`dataset_stage`, reused
   from the parent while the processed manifest's sha256s and `build.datasets` are the same), and the provenance events
   (`provenance_stage`: seed 003's agent actions with their outcomes folded in, each raw file's rows reused from the parent
   while the file is unchanged), whose labels every row naming a commit gets as the tables are written.
4. Deduplicate over all kept sessions, new and reused; write the tables and the manifest into
   `curated/.<id>.partial/`, fsync it, rename it to `curated/<id>/`, then point `curated/LATEST` at it
   (an `--org` build: `curated/LATEST.org=<org>`, so `latest` always names a build of the whole lake).
   A build killed halfway leaves only a `.partial` folder, which the next build removes (unless another
   build is running: it cannot tell that build's folder from a dead one's, so it leaves them all).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.build import held_out as held_outs
from pipelines.build import manifest as manifests
from pipelines.build.dataset_stage import DATASET_SUFFIX, stage_datasets
from pipelines.build.dedup import Candidate, find_duplicates
from pipelines.build.event_rows import TELEMETRY_SUFFIX
from pipelines.build.event_stage import stage_events
from pipelines.build.output import write_tables
from pipelines.build.provenance_stage import stage_provenance
from pipelines.build.settings import BuildSettings, warn_if_unredacted
from pipelines.build.columns import ScoredSessions
from pipelines.build.index_stage import index_lake
from pipelines.build.sessions import SessionRefs, group_sessions
from pipelines.build.sources import raw_files
from pipelines.build.staging import STAGE_DIR, STAGE_SCHEMAS, link_staged, stage_file, staged_files
from trajforge import tombstones
from trajforge.cluster import init_ray
from trajforge.contracts.events import partition_name
from trajforge.errors import ConfigError
from trajforge.lake import Lake

log = logging.getLogger(__name__)


def claim_build_id(lake: Lake) -> tuple[str, Path]:
    """A build id no earlier build of this lake used, and its freshly made work folder.

    Ids read as the UTC second and the process id; two builds in the same second from one
    process (a rerun right after a build) get a counter, so no build ever lands on another's folder.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid() % 10000:04d}"
    for attempt in range(1, 1000):
        build_id = stamp if attempt == 1 else f"{stamp}.{attempt}"
        work = lake.curated / f".{build_id}.partial"
        if lake.build_dir(build_id).exists():
            continue
        try:
            work.mkdir(parents=True)
        except FileExistsError:
            continue
        return build_id, work
    raise ConfigError(f"build: could not claim a build id under {lake.curated}; remove stale .*.partial folders there")


def _org_contributors(settings: BuildSettings, lake: Lake, org: str | None) -> set[str] | None:
    """The contributors whose field sessions an `--org` build keeps (None: no filter).

    Telemetry events carry their organization (`org_id`, as Starcode's TRAINING_ORG_ID export filters them);
    field sessions do not, so `build.orgs` lists an organization's contributors. An organization only the
    events name builds its events alone.
    """
    if not org:
        return None
    if org in settings.orgs:
        return set(settings.orgs[org])
    events = lake.raw / "events"
    event_orgs = sorted(path.name.removeprefix("org=") for path in events.glob("org=*")) if events.is_dir() else []
    if partition_name(org) in event_orgs:
        log.info("--org %s is not in build.orgs: building its telemetry events only (list its contributors in build.orgs "
                 "for its field sessions)", org)
        return set()
    raise ConfigError(f"--org {org!r} is neither in build.orgs of configs/pipeline.yaml (known: {sorted(settings.orgs)}) nor an "
                      f"org_id of the lake's telemetry events (known: {event_orgs}); add it to build.orgs with its contributor ids")


def _parent(lake: Lake, settings: BuildSettings, org: str | None, full: bool, forgotten_digest: str) -> Path | None:
    """The newest earlier build made with the same config and org (an `--org` build in between is not one), or None."""
    if full:
        return None
    for candidate in _earlier_builds(lake):
        try:
            previous = json.loads((candidate / "manifest.json").read_text())
        except (OSError, ValueError):
            log.warning("build %s has no readable manifest: passed over", candidate.name)
            continue
        if previous.get("config_hash") != settings.content_hash(org) or previous.get("org") != org:
            continue
        if (previous.get("forgotten") or {}).get("digest", tombstones.digest(set())) != forgotten_digest:
            log.info("contributors were forgotten since build %s: building everything (its staged rows may hold them)", candidate.name)
            return None
        if not (candidate / STAGE_DIR).is_dir():
            log.warning("build %s has no staging area: building everything", candidate.name)
            return None
        return candidate
    log.info("no earlier build with this config and org: building everything")
    return None


def _earlier_builds(lake: Lake) -> list[Path]:
    """Complete builds, newest first: the one LATEST names, then the others by when their manifest was written."""
    found = [path for path in lake.curated.iterdir() if not path.name.startswith(".") and (path / "manifest.json").is_file()]
    latest = lake.latest_build_id()
    return sorted(found, key=lambda path: (path.name == latest, (path / "manifest.json").stat().st_mtime_ns), reverse=True)


def _reuse(parent: Path | None, stage: Path, ready: dict[str, SessionRefs], loop_runs: bool = True) -> dict[str, str]:
    """Link the parent's staged files and return the sessions it already holds unchanged -> their origin
    (teacher and actor runs only with `loop_runs`: false when the parent held out other test tasks)."""
    if parent is None:
        return {}
    reused = {}
    for path in staged_files(parent / STAGE_DIR, "trajectories"):
        table = pq.read_table(path, columns=["session_id", "fingerprint", "_origin"])
        for session_id, fingerprint, origin in zip(*(table.column(name).to_pylist() for name in table.column_names)):
            if session_id in ready and ready[session_id].fingerprint == fingerprint and (loop_runs or ready[session_id].source == "ingest"):
                reused[session_id] = origin
    for table in ("trajectories", "sft", "behavior", "embeddings"):
        for path in staged_files(parent / STAGE_DIR, table):
            if path.name.endswith((TELEMETRY_SUFFIX, DATASET_SUFFIX)):  # telemetry rows are linked by stage_events, dataset rows by stage_datasets
                continue
            link_staged(path, stage / table / path.name)
    return reused


def _scores(scored: ScoredSessions, todo: list[SessionRefs]) -> dict[str, dict[str, Any]]:
    """Every ingest session to build -> its score (or why it has none), from the columnar pass over the lake."""
    wanted = {s.session_id for s in todo if s.source == "ingest"}
    found: dict[str, dict[str, Any]] = {session: {"unscorable": reason} for session, reason in scored.unscorable.items() if session in wanted}
    for index, session in enumerate(scored.session_ids):
        if session not in wanted:
            continue
        found[session] = {"score": dataclasses.asdict(scored.score(index))}
    return found


def _batches(todo: list[SessionRefs], size: int, scores: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for index in range(0, len(todo), size):
        sessions = [{"session_id": s.session_id, "source": s.source, "fingerprint": s.fingerprint, "refs": s.refs, **scores.get(s.session_id, {})}
                    for s in todo[index : index + size]]
        rows.append({"batch_index": index // size, "sessions": json.dumps(sessions)})
    return rows


def _process(settings: BuildSettings, lake: Lake, stage: Path, build_id: str, todo: list[SessionRefs], scores: dict[str, dict[str, Any]]) -> int:
    import ray
    from ray.data import TaskPoolStrategy

    from pipelines.build.embed_stage import embed_and_tag
    from pipelines.build.process import process_batch

    if not todo:
        return 0
    batches = _batches(todo, settings.sessions_per_batch, scores)
    dataset = ray.data.from_items(batches, override_num_blocks=len(batches)).map_batches(
        process_batch, batch_size=1, compute=TaskPoolStrategy(size=min(settings.workers, len(batches))), num_cpus=settings.cpus_per_task,
        fn_kwargs={"lake_root": str(lake.root), "stage_dir": str(stage), "origin": build_id, "settings_json": settings.model_dump_json()},
    )
    if settings.embedding.enabled:
        dataset = embed_and_tag(dataset, settings.embedding)
    processed, buffer, written = 0, [], 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        processed += batch.num_rows
        if settings.embedding.enabled:
            buffer.append(batch)
            if sum(table.num_rows for table in buffer) >= 8192:
                _stage_embeddings(buffer, stage, build_id, written)
                buffer, written = [], written + 1
    if buffer:
        _stage_embeddings(buffer, stage, build_id, written)
    return processed


def _stage_embeddings(tables: list[pa.Table], stage: Path, build_id: str, index: int) -> None:
    table = pa.concat_tables([t.select(["session_id", "embedding", "domain", "domain_tags_json"]) for t in tables])
    tags = [json.loads(value) for value in table.column("domain_tags_json").to_pylist()]
    schema = STAGE_SCHEMAS["embeddings"]
    rows = pa.table({"session_id": table.column("session_id"), "embedding": table.column("embedding").cast(schema.field("embedding").type),
                     "domain": table.column("domain"), "domain_tags": pa.array(tags, schema.field("domain_tags").type),
                     "_origin": pa.array([build_id] * table.num_rows, pa.string())}, schema=schema)
    path = stage_file(stage, "embeddings", build_id, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, path)


def _candidates(stage: Path, chosen: dict[str, str], sft_tiers: list[str]) -> list[Candidate]:
    """The dedup candidates, each `eligible` when it can become sft rows: a training-eligible loop run, or field session
    of one of `sft_tiers` (a training-eligible TIER_C session makes none, so it never displaces a TIER_A copy)."""
    found = []
    for path in staged_files(stage, "trajectories"):
        table = pq.read_table(path, columns=["session_id", "_origin", "content_hash", "score", "minhash", "training_eligible", "source", "tier"])
        for session_id, origin, content, points, signature, eligible, source, tier in zip(*(table.column(n).to_pylist() for n in table.column_names)):
            if chosen.get(session_id) == origin:
                found.append(Candidate(session_id, content, points, signature, bool(eligible) and (source != "ingest" or tier in sft_tiers)))
    return found


@contextlib.contextmanager
def running_build(lake: Lake) -> Iterator[None]:
    """Held for the whole of a build. Removes the `.partial` folders of killed builds first, but only when no
    other build holds the lock: a build running beside this one keeps its folder."""
    lake.curated.mkdir(parents=True, exist_ok=True)
    with open(lake.curated / ".builds.lock", "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another build of %s is running: unfinished .partial folders are left for a later build to remove", lake.curated)
        else:
            for stale in lake.curated.glob(".*.partial"):
                log.info("removing %s, left by a build that did not finish", stale.name)
                shutil.rmtree(stale, ignore_errors=True)
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield


def _empty_lake(lake: Lake) -> bool:
    """A folder holding nothing, or only the builds made of it: an empty lake (a path that is no lake is refused)."""
    return lake.root.is_dir() and all(entry == lake.curated for entry in lake.root.iterdir())


def run_build(settings: BuildSettings, *, full: bool = False, org: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Build the curated lake; returns the manifest."""
    lake = Lake.at(settings.lake)
    if not lake.raw.is_dir() and not _empty_lake(lake):  # an empty folder is an empty lake: an empty build
        what = "has no raw/ folder" if lake.root.exists() else "does not exist"
        raise ConfigError(f"build.lake: {lake.root} {what}; point --lake at a lake the ingest service or a job wrote")
    contributors = _org_contributors(settings, lake, org)
    warn_if_unredacted(settings)
    with running_build(lake):
        return _run_build(settings, lake, contributors, full=full, org=org, progress=progress)


def _run_build(settings: BuildSettings, lake: Lake, contributors: set[str] | None, *, full: bool, org: str | None, progress: bool) -> dict[str, Any]:
    started = time.time()
    build_id, work = claim_build_id(lake)
    stage = work / STAGE_DIR
    stage.mkdir(parents=True)
    init_ray()

    forgotten = tombstones.forgotten(lake)
    parent = _parent(lake, settings, org, full, tombstones.digest(forgotten))
    files = raw_files(lake.root)
    indexed = index_lake(str(lake.root), files, settings.cpus_per_task, progress, stage=stage, parent=parent, build_id=build_id)
    if indexed.reused:
        log.info("raw index: %d of %d raw files reused from build %s (unchanged since it read them), %d read", indexed.reused, len(files),
                 parent.name, len(files) - indexed.reused)
    indexes = indexed.indexes
    sessions = group_sessions(indexes, files)
    is_ready = sessions.closed | (time.time() - sessions.last_seen >= settings.open_session_grace_s)
    in_org = np.ones(len(sessions), dtype=bool) if contributors is None else np.array(
        [source == "ingest" and contributor in contributors for source, contributor in zip(sessions.sources, sessions.contributors)], dtype=bool)
    ready = sessions.select(is_ready & in_org)
    left_out = {key for key, s in ready.items() if s.contributor_id and s.contributor_id.lower() in forgotten}
    ready = {key: s for key, s in ready.items() if key not in left_out}
    pending_open, other_orgs = int((~is_ready & in_org).sum()), int((~in_org).sum())  # the built orgs' open sessions only
    held = held_outs.read_held_out(lake)  # the processed splits' task ids: loop runs on them follow their split
    rebuild_loop = parent is not None and held_outs.parent_digest(parent) != held.digest
    if rebuild_loop:
        log.info("the held-out test tasks changed since build %s: building its teacher and actor runs again", parent.name)
    reused = _reuse(parent, stage, ready, loop_runs=not rebuild_loop)
    todo = [ready[key] for key in sorted(ready) if key not in reused]
    log.info("build %s: %d sessions ready (%d reused from %s, %d to build), %d still open%s", build_id, len(ready), len(reused),
             parent.name if parent else "nothing", len(todo), pending_open, f", {other_orgs} of other organizations left out" if org else "")
    scores = _scores(indexed.scored(), todo)
    indexed.scores = []  # frees the segments' columns in the object store
    # the split of a processed record's task (test, dev, train) travels with its loop runs' batch
    scores.update({s.session_id: {held_outs.SECTION: split} for s in todo if (split := held.split_of(s.session_id))})
    held_outs.write_quarantine(stage, held)
    _process(settings, lake, stage, build_id, todo, scores)
    telemetry_rows, telemetry = stage_events(settings, lake.root, stage, build_id, org=org, forgotten=forgotten, parent=parent)
    datasets = stage_datasets(settings, lake, stage, build_id, parent, org)
    provenance = stage_provenance(settings, lake, stage, build_id, parent, org, forgotten)

    chosen = {**reused, **{s.session_id: build_id for s in todo}, **datasets.chosen}
    candidates = _candidates(stage, chosen, settings.sft.tiers)
    built = {candidate.session_id for candidate in candidates}
    dropped = find_duplicates(candidates, settings.dedup.threshold, settings.dedup.num_perm)
    gone = {item.dropped for item in dropped}
    keep = sorted([(key, chosen[key]) for key in (built - gone) | set(datasets.chosen)] + list(telemetry_rows))  # a telemetry session's
    chosen_table = pa.table({"session_id": [key for key, _ in keep], "_origin": [origin for _, origin in keep]})  # rows: one pair per origin
    files_written = write_tables(work, stage, chosen_table, [item.as_row() for item in dropped] + datasets.duplicates, rows_per_file=settings.rows_per_file,
                                 embedded=settings.embedding.enabled, label=provenance.labeller.label, made={"provenance": provenance.table})
    manifest = manifests.build_manifest(
        work, stage, settings, build_id=build_id, parent=parent.name if parent else None, org=org, files=files_written, indexes=indexes,
        sessions={"ready": len(ready), "built": len(todo), "reused": len(reused), "pending_open": pending_open, "other_orgs": other_orgs,
                  "quarantined": len(ready) - len(built), "forgotten": len(left_out)},
        forgotten={"contributors": len(forgotten), "digest": tombstones.digest(forgotten)},
        todo_origin=build_id, dropped=dropped, seconds=time.time() - started,
    )
    manifest["raw_index"] = {"files": len(files), "files_read": len(files) - indexed.reused, "files_reused": indexed.reused,
                             "reused_from": parent.name if indexed.reused else None}
    manifest["telemetry"] = telemetry
    manifest["provenance"] = provenance.section()
    manifest[held_outs.SECTION] = held_outs.section(work, held, rebuild_loop)
    if datasets.summary is not None:
        manifest["datasets"] = datasets.summary
    manifests.publish(lake, work, build_id, manifest)
    return manifest
