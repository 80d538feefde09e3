"""Build throughput and memory on a generated lake, against DuckDB SQL on the same envelopes.

    python -m benchmarks.build [--sessions 100000] [--skip-embed] [--skip-build] [--workdir DIR]

Generates a raw lake of `--sessions` field sessions (8 to 32 steps each, about 2 million steps at
100,000; one or two chunks, a close; a few planted secrets and near-duplicates) as real envelope
segments, plus the same envelope bodies as JSON lines for DuckDB. Then, in this one run:
- `duckdb`: stitch + score written as SQL (unnest the steps, order, count by type, the scorer's
  formula with error recovery as a window) over the JSON lines, written to Parquet: the
  single-machine limit for the part both do;
- `stitch+score+write`: the same part with the build's own first stage (`pipelines/build/index_stage.py`:
  read and index each segment as a Ray task, parse the bodies with Arrow, stitch and score the
  sessions as columns in one task per CPU while the driver groups them), written to Parquet; run
  twice, `cold` (Ray starts its workers inside the timing, as a fresh build does) then `warm`;
- `build` with embedding off, then on: the whole `pipelines/build` job (index, stitch, redact,
  derive, score, sft/behaviour rows, MinHash, dedup, sorted Parquet, manifest);
- `build +10%, incremental`: 10% more sessions (half appended to the last segment, half in a new one),
  then a build without `--full` (embedding off): it reads only the two changed segments and builds
  only the new sessions, the rest linked from the embedding-off build.
Prints sessions/s, peak memory (RSS of this process and every process it started, Ray's workers
included) and the ratios. Targets: stitch+score+write >= 0.5x DuckDB; peak memory < 4 GB.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

from trajforge.constants import MODEL_TIERS
from trajforge.raw_segments import SegmentWriter, encode_frame

KINDS = ["thought", "action", "observation", "action", "observation", "edit", "observation", "error", "correction", "thought"]
WORDS = ("the handler request retries fetch cache config build test module import error fixed patch deploy service client "
         "query index schema table column value parse token user session commit branch merge review lint format").split()
SESSIONS_PER_SEGMENT = 5000


def _session(rng: random.Random, index: int, start: float) -> list[tuple[dict, dict]]:
    session_id = f"sess_{uuid.UUID(int=rng.getrandbits(128))}"
    contributor = f"{rng.randrange(200):032x}"
    model = rng.choice(list(MODEL_TIERS) + ["gpt-4.1"])
    count = rng.randint(8, 32)
    steps = [{"step": 1, "type": "instruction", "timestamp": start, "content": f"Task {index}: " + " ".join(rng.choices(WORDS, k=25)), "token_count": 40}]
    for number in range(2, count):
        kind = rng.choice(KINDS)
        text = " ".join(rng.choices(WORDS, k=rng.randint(10, 60)))
        if rng.random() < 0.01:
            text += f" contact ops-{index}@example.com"
        step = {"step": number, "type": kind, "timestamp": start + number * 3.0, "content": text, "token_count": 30 + len(text) // 4}
        if kind in ("action", "edit"):
            step.update(tool="command_execution", arguments={"command": f"pytest tests/test_{rng.randrange(50)}.py"})
        steps.append(step)
    steps.append({"step": count, "type": "resolution", "timestamp": start + count * 3.0, "content": "all tests pass", "token_count": 5})
    metadata = {"provider": "codex", "model_engine": model, "agent_role": "backend", "task_complexity": rng.choice(["light", "medium", "heavy"])}
    cut = count // 2 if count > 16 else count
    chunks = [steps[:cut], steps[cut:]] if cut < count else [steps]
    envelopes = [{"session_id": session_id, "chunk_sequence": n, "contributor_id": contributor, "metadata": metadata, "trajectory_log": chunk}
                 for n, chunk in enumerate(chunks)]
    envelopes.append({"session_id": session_id, "type": "SESSION_CLOSE", "contributor_id": contributor, "metadata": metadata, "outcome": {"status": "SUCCESS"}})
    framed = []
    for sequence, envelope in enumerate(envelopes):
        kind = envelope.get("type", "CHUNK")
        header = {"envelope_id": f"env_{uuid.UUID(int=rng.getrandbits(128))}", "session_id": session_id, "kind": kind, "sequence": sequence,
                  "contributor_id": contributor, "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)), "hmac": f"{rng.getrandbits(256):064x}",
                  "steps": len(envelope.get("trajectory_log") or [])}
        framed.append((header, envelope))
    return framed


def generate(lake: Path, sessions: int, seed: int = 7) -> tuple[Path, int]:
    """The raw lake and a JSON-lines mirror of its envelope bodies; returns (mirror, steps)."""
    rng = random.Random(seed)
    shutil.rmtree(lake, ignore_errors=True)  # a lake left by an earlier run in the same --workdir: segments would be appended to
    folder = lake / "raw" / "envelopes" / "date=2026-11-22"
    mirror = lake.parent / "envelopes.jsonl"
    start = time.time() - 3600
    steps = 0
    writer = None
    with mirror.open("w") as out:
        for index in range(sessions):
            if index % SESSIONS_PER_SEGMENT == 0:
                if writer is not None:
                    writer.sync()
                    writer.close()
                writer = SegmentWriter(folder / f"bench-{index // SESSIONS_PER_SEGMENT:04d}.seg")
            framed = _session(rng, index, start)
            frames = []
            for header, envelope in framed:
                body = json.dumps(envelope, separators=(",", ":"))
                frames.append(encode_frame(header, body.encode()))
                out.write(body + "\n")
                steps += len(envelope.get("trajectory_log") or [])
            writer.append(frames)
    writer.sync()
    writer.close()
    return mirror, steps


DUCKDB_SQL = """
COPY (
  WITH envelopes AS (SELECT * FROM read_json('{mirror}', format='newline_delimited', maximum_object_size=16777216,
                       columns={{session_id: 'VARCHAR', chunk_sequence: 'INTEGER', metadata: 'STRUCT(model_engine VARCHAR, task_complexity VARCHAR)',
                                 trajectory_log: 'STRUCT(step INTEGER, type VARCHAR, token_count INTEGER, tool VARCHAR)[]', type: 'VARCHAR'}})),
  steps AS (SELECT session_id, s.step AS step, s.type AS type, s.token_count AS tokens
            FROM (SELECT session_id, unnest(trajectory_log) AS s FROM envelopes WHERE type IS NULL)),
  unique_steps AS (SELECT DISTINCT ON (session_id, step) * FROM steps ORDER BY session_id, step),
  flow AS (SELECT session_id, type, lag(type) OVER (PARTITION BY session_id ORDER BY step) AS previous
           FROM unique_steps WHERE type IN ('error', 'correction', 'resolution')),
  recovered AS (SELECT session_id, count(*) AS n FROM flow WHERE type IN ('correction', 'resolution') AND previous = 'error' GROUP BY session_id),
  meta AS (SELECT DISTINCT ON (session_id) session_id, metadata.model_engine AS model, metadata.task_complexity AS complexity FROM envelopes
           WHERE type IS NULL ORDER BY session_id, chunk_sequence),
  tiers AS (SELECT * FROM (VALUES {tiers}) t(model, multiplier)),
  counts AS (SELECT session_id, count(*) AS n, sum(tokens) AS tokens, count(*) FILTER (type = 'correction') AS corrections,
                    count(*) FILTER (type = 'coordination') AS coordination, count(*) FILTER (type = 'error') AS errors,
                    count(*) FILTER (type = 'resolution') AS resolutions FROM unique_steps GROUP BY session_id),
  scored AS (SELECT c.session_id, c.n, c.tokens, least(c.n, 5000) AS base, coalesce(t.multiplier, 1) AS multiplier,
                    least(c.corrections, c.n * 0.3) * 10 + least(c.coordination, c.n * 0.2) * 5 + least(coalesce(r.n, 0), c.errors) * 3
                    + CASE WHEN m.complexity = 'heavy' THEN least(c.n, 5000) ELSE 0 END AS bonuses, c.resolutions
             FROM counts c JOIN meta m USING (session_id) LEFT JOIN tiers t ON t.model = m.model LEFT JOIN recovered r USING (session_id))
  SELECT session_id, n AS total_steps, tokens AS total_tokens,
         base * multiplier + bonuses + CASE WHEN resolutions > 0 AND n BETWEEN 5 AND 5000 THEN floor((base * multiplier + bonuses) * 0.1) ELSE 0 END AS score
  FROM scored ORDER BY session_id
) TO '{out}' (FORMAT parquet, COMPRESSION zstd)
"""


class PeakMemory:
    """Peak RSS of this process plus every process it started (Ray's raylet and workers), sampled."""

    def __init__(self, interval_s: float = 0.25):
        import psutil

        self.process = psutil.Process()
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for process in [self.process, *self.process.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_duckdb(mirror: Path, out: Path) -> float:
    import duckdb

    tiers = ", ".join(f"('{model}', {multiplier})" for model, multiplier in MODEL_TIERS.items())
    connection = duckdb.connect(config={"threads": 2, "memory_limit": "4GB"})
    started = time.perf_counter()
    connection.execute(DUCKDB_SQL.format(mirror=mirror, tiers=tiers, out=out))
    return time.perf_counter() - started


def run_stitch_score(lake: Path, out: Path) -> float:
    """The build's own first stage: read and index every segment, score the sessions as columns in one
    task per CPU while the driver groups them (Ray tasks on the same 2 CPUs), write the scores to
    Parquet: the part DuckDB's SQL does."""
    import pyarrow.parquet as pq
    import ray

    from pipelines.build.index_stage import index_lake
    from pipelines.build.sessions import group_sessions
    from pipelines.build.sources import raw_files

    out.mkdir(parents=True, exist_ok=True)
    ray.init(ignore_reinit_error=True, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
    started = time.perf_counter()
    files = raw_files(lake)
    indexed = index_lake(str(lake), files, 1.0, progress=False)
    sessions = group_sessions(indexed.indexes, files)
    scored = indexed.scored()
    pq.write_table(scored.table().select(["session_id", "total_steps", "total_tokens", "score"]), out / "scores.parquet", compression="zstd")
    seconds = time.perf_counter() - started
    assert len(scored.session_ids) == len(sessions) and not scored.unscorable, (len(scored.session_ids), len(sessions))
    return seconds


def grow(lake: Path, sessions: int, added: int, seed: int = 11) -> None:
    """`added` more sessions: the first half appended to the last segment (as a writer's open segment grows), the rest in a new one."""
    rng = random.Random(seed)
    folder = lake / "raw" / "envelopes" / "date=2026-11-22"
    start = time.time() - 3600
    for path, first, count in ((sorted(folder.glob("*.seg"))[-1], sessions, added // 2), (folder / "bench-grown.seg", sessions + added // 2, added - added // 2)):
        writer = SegmentWriter(path)
        for index in range(first, first + count):
            writer.append([encode_frame(header, json.dumps(envelope, separators=(",", ":")).encode()) for header, envelope in _session(rng, index, start)])
        writer.sync()
        writer.close()


def run_build_once(lake: Path, embed: bool, full: bool = True) -> tuple[float, dict]:
    from pipelines.build import load_build_settings, run_build

    settings = load_build_settings(assignments=[("build.lake", str(lake)), ("build.embedding.enabled", embed)])
    started = time.perf_counter()
    manifest = run_build(settings, full=full, progress=False)
    return time.perf_counter() - started, manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions to generate (default 100000, about 2 million steps)")
    parser.add_argument("--skip-embed", action="store_true", help="leave out the run with embeddings")
    parser.add_argument("--skip-build", action="store_true", help="leave out the whole-build runs (only DuckDB against the stitch+score+write stage)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to generate the lake (default: a temporary folder, removed after)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trajforge-bench-build-"))
    workdir.mkdir(parents=True, exist_ok=True)
    lake = workdir / "lake"
    try:
        started = time.perf_counter()
        mirror, steps = generate(lake, args.sessions)
        print(f"generated {args.sessions} sessions, {steps} steps in {time.perf_counter() - started:.1f} s ({workdir})", flush=True)
        with PeakMemory() as duck_memory:
            duck_s = run_duckdb(mirror, workdir / "duckdb.parquet")
        print(f"\n{'run':<34} {'seconds':>8} {'sessions/s':>11} {'peak GB':>8} {'vs duckdb':>10}")

        def show(name: str, seconds: float, peak: int) -> None:
            print(f"{name:<34} {seconds:>8.1f} {args.sessions / seconds:>11.0f} {peak / 2**30:>8.2f} {duck_s / seconds:>9.2f}x", flush=True)

        show("duckdb stitch+score+write (SQL)", duck_s, duck_memory.peak)
        for label in ("cold", "warm"):  # cold: Ray starts and imports its workers within the timing; warm: they are running
            with PeakMemory() as ours_memory:
                ours_s = run_stitch_score(lake, workdir / f"stitch_score_{label}")
            show(f"stitch+score+write, {label} workers", ours_s, ours_memory.peak)
        for embed in [] if args.skip_build else [False] if args.skip_embed else [False, True]:
            with PeakMemory() as memory:
                seconds, manifest = run_build_once(lake, embed)
            assert manifest["rows"]["trajectories"] + manifest["dedup"]["exact"] + manifest["dedup"]["near"] == args.sessions, manifest["sessions"]
            show(f"build, embedding {'on' if embed else 'off'}", seconds, memory.peak)
        if not args.skip_build:
            added = max(1, args.sessions // 10)
            grow(lake, args.sessions, added)
            with PeakMemory() as memory:
                seconds, manifest = run_build_once(lake, embed=False, full=False)
            assert manifest["sessions"]["built"] == added and manifest["raw_index"]["files_read"] <= 2, (manifest["sessions"], manifest["raw_index"])
            print(f"{'build +10%, incremental':<34} {seconds:>8.1f} {added / seconds:>11.0f} {memory.peak / 2**30:>8.2f}  (sessions/s: of the new ones)",
                  flush=True)
        print("\ntargets: stitch+score+write >= 0.5x duckdb; peak memory < 4 GB")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
