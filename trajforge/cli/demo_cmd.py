"""`trajforge demo`: the main job end to end on the embedded default.

Starts a local Ray with the Serve applications, replays the recorded agent sessions of
examples/sessions through the client SDK over HTTP, shows what the protocol refuses, prints the stats;
then rewrites code in the sandbox, makes synthetic tasks and runs the oracle teacher on them (some held
out), builds the curated Parquet, trains the embedded model on it with DeepSpeed on Ray Train, and
loads the trained checkpoint into a generation actor that runs the loop on the held-out tasks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import uuid
from pathlib import Path

from trajforge.atomic import write_atomic
from trajforge.cli import serve_cmd
from trajforge.cli.common import add_examples, nonblank, positive_int
from trajforge.errors import ConfigError


EXAMPLES = """\
  trajforge demo
  trajforge demo --lake /tmp/demo-lake --port 8001 --train-steps 10
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", type=nonblank, default="./lake", help="lake root (default ./lake; it accumulates across runs)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--sessions", type=Path, default=None, help="folder of recorded sessions (default examples/sessions)")
    parser.add_argument("--config", type=Path, default=None, help="Serve config file (default configs/serve.yaml)")
    parser.add_argument("--runs", type=Path, default=Path("./runs"), help="where the training run goes (default ./runs; replaced each demo)")
    parser.add_argument("--train-steps", type=positive_int, default=30, help="optimizer steps of the demo's training run (default 30)")
    add_examples(parser, EXAMPLES)


def config_roots(args: argparse.Namespace) -> list[str]:
    """The demo deploys the Serve config (--config) with the --set and TRAJFORGE__ overrides of `trajforge serve`."""
    return serve_cmd.config_roots(args)


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 66 - len(title)), flush=True)


def run_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from trajforge import serving
    from trajforge.client import IngestClient
    from trajforge.replay import EXAMPLES, load_recorded, recorded_sessions, replay
    from trajforge.settings.job_paths import absolute_data_paths

    args.host, args.address = "127.0.0.1", None
    for field, path in absolute_data_paths({"lake": args.lake, "runs": args.runs}, "--lake /shared/lake --runs /shared/runs"):
        setattr(args, field, type(getattr(args, field))(path))  # Ray's workers may run in another folder (a joined cluster's)
    serve_file = serve_cmd.load(args)
    folder = args.sessions or EXAMPLES
    paths = recorded_sessions(folder)
    if not paths:
        what = "does not exist" if not folder.exists() else ("is not a folder" if not folder.is_dir() else "has no recorded sessions (*.json)")
        raise ConfigError(f"--sessions: {folder} {what}: give a folder of recorded sessions such as {EXAMPLES} (nothing was started)")
    _section("starting Ray and the Serve applications")
    started = time.monotonic()
    try:
        url = serving.deploy(serve_file)
        where = "a local Ray started by the demo" if serving.started_ray_here() else f"the Ray cluster at {serving.cluster_address()}"
        print(f"serving at {url} on {where} after {time.monotonic() - started:.1f} s (lake: {Path(args.lake).resolve()})")
        run_tag = uuid.uuid4().hex[:8]
        with IngestClient(url) as client:
            _section(f"replaying {len(paths)} recorded agent sessions through the client SDK")
            results = []
            for path in tqdm(paths, desc="sessions", unit="session"):
                doc = load_recorded(path)
                machine = hashlib.sha256(f"{doc['contributor']}-{run_tag}".encode()).hexdigest()
                results.append((doc, replay(client, doc, name=path.stem, machine=machine)))
            print(f"{'session':<34} {'model':<18} {'steps':>5} {'env':>4} {'status':<8} {'points':>8}")
            for doc, result in results:
                points = f"{result.points:.1f}" if result.points is not None else "-"
                status = (doc.get("close") or {}).get("status", "")
                print(f"{result.name[:34]:<34} {doc['model'][:18]:<18} {result.steps:>5} {result.envelopes:>4} {status:<8} {points:>8}")

            _section("Starcode telemetry events (POST /v1/events)")
            _send_events(client, run_tag)

            _section("domain tags (embed service + DomainTagger)")
            _show_domain_tags(url, results)

            if any(app.name == "generate" for app in serve_file.applications):
                _section("the OpenAI-compatible front (/generate/v1, the embedded model before training)")
                _show_front(url + serve_file.app("generate").route_prefix.rstrip("/"))

            _section("provenance (STEREOS): an API token, an agent action and its outcome, by commit and by file")
            _show_provenance(url, run_tag)

            _section("what the protocol refuses")
            _show_refusals(client, paths[0])

            _section("stats")
            summary = client.get("/v1/stats/summary")
            print(json.dumps(summary, indent=2))
            print("models:", json.dumps(client.get("/v1/stats/models")))
            print("leaderboard:", json.dumps(client.get("/v1/stats/leaderboard", limit=5)))
    finally:
        serving.shutdown(serving.DEPLOYED)
    _section("sandbox: ast-grep rewrites in the nsjail jail (configs/sandbox.yaml)")
    from sandbox.demo import show_rewrites

    show_rewrites()
    _section("public code-edit datasets (configs/datasets.yaml: the samples in examples/datasets)")
    _datasets(Path(args.lake))
    _section("schema-first synthetic records (one call each, the embedded model, structured output)")
    _synth_records(Path(args.lake))
    _section("synthetic ast-grep tasks, then the teacher SRL loop (offline oracle teacher)")
    held_out = _synth_and_teach(Path(args.lake), args.runs)
    _section("build: the raw lake -> curated Parquet (Ray Data: stitch, redact, score, embed, dedup), published with the raw lake")
    build_dir = _build_and_show(Path(args.lake))
    _section(f"train: the embedded Qwen3-shaped model, {args.train_steps} steps (DeepSpeed ZeRO-3 on Ray Train, 2 CPU workers)")
    export = _train(build_dir, args.train_steps, args.runs)
    _section(f"the circle: the trained checkpoint in a generation actor, on {len(held_out)} held-out tasks")
    _close_the_circle(export, held_out, Path(args.lake))
    _section("trajforge lake info: what the lake holds now")
    _show_lake(Path(args.lake))
    print(f"\ndone in {time.monotonic() - started:.1f} s. Raw segments: {Path(args.lake).resolve() / 'raw' / 'envelopes'}")
    return 0


def _send_events(client, run_tag: str) -> None:
    """The recorded Starcode events (ids made unique to this run) through the telemetry SDK: each redacted and spooled,
    then flushed in one request; sent again, all are duplicates."""
    import tempfile

    from trajforge.client import TelemetryClient
    from trajforge.replay import EXAMPLES

    path = EXAMPLES.parent / "events" / "starcode_events.jsonl"
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for event in events:
        event["event_id"] = f"{event['event_id']}-{run_tag}"
    with tempfile.TemporaryDirectory() as spool, TelemetryClient(client.base_url, spool_path=Path(spool) / "events.db") as telemetry:
        for event in events:
            telemetry.record(event)
        first = telemetry.flush()
        for event in events:
            telemetry.record(event)
        again = telemetry.flush()
    kinds = ", ".join(f"{kind} {sum(e['event_type'] == kind for e in events)}" for kind in sorted({e["event_type"] for e in events}))
    print(f"{len(events)} events ({kinds}) from {path.name}, redacted and spooled by the telemetry SDK: {first.accepted} accepted; "
          f"sent again: {again.accepted} accepted, {again.duplicates} duplicates")


def _show_refusals(client, recorded_path: Path) -> None:
    """Replay, tampering and a stale sequence, each answered as the protocol says."""
    from trajforge.client import contributor_id_for
    from trajforge.replay import _absolute, load_recorded

    doc = load_recorded(recorded_path)
    session = client.open_session(provider=doc["provider"], model=doc["model"], contributor_id=contributor_id_for("demo"), machine=uuid.uuid4().hex)
    steps = [_absolute(step, time.time() - 60) for step in doc["chunks"][0][:5]]
    body = session.chunk(steps)
    first = client._request("POST", "/v1/training/ingest", body)
    replayed = client._request("POST", "/v1/training/ingest", body)
    tampered = body.replace(b'"step":1', b'"step":7', 1)
    forged = client._request("POST", "/v1/training/ingest", tampered)
    session.sequence = 0
    stale = client._request("POST", "/v1/training/ingest", session.chunk(steps[:2]))
    not_json = client._request("POST", "/v1/training/ingest", b'{"session_id": NaN}')
    for label, (status, answer) in [
        ("first delivery", first), ("exact replay", replayed), ("tampered step", forged),
        ("reused sequence", stale), ("NaN in JSON", not_json),
    ]:
        detail = "duplicate" if answer.get("duplicate") else answer.get("error", "accepted")
        print(f"  {label:<16} -> {status} {detail}")


def _session_text(doc: dict) -> str:
    """What a Groove client embeds for a session: the agent's role, then its first thoughts."""
    role = (doc.get("metadata") or {}).get("agent_role", "")
    thoughts = [step.get("content", "") for chunk in doc["chunks"] for step in chunk if step.get("type") in ("thought", "instruction")]
    return "\n".join([role, *thoughts[:3]])


def _show_domain_tags(url: str, results: list) -> None:
    import httpx

    from trajforge import embedding
    from trajforge.domains import DomainTagger

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not httpx.get(f"{url}/v1/embed", timeout=10).json().get("ready"):
        time.sleep(0.5)
    texts = [_session_text(doc) for doc, _ in results]
    try:
        embed = embedding.remote(url)
        tagger = DomainTagger(embed=embed)
        tags = [tagger.tag_vector(vector) for vector in embed(texts)]
    except RuntimeError as exc:  # the service is not there: the keyword fallback, and say so
        print(f"embed service unavailable ({exc}); falling back to keywords")
        tagger = DomainTagger()
        tags = [tagger.tag(text) for text in texts]
    print(f"{'session':<34} {'primary':<24} {'secondary':<24} {'tertiary':<24} method")
    for (doc, result), tag in zip(results, tags):
        cells = [f"{tag[rank]['domain']} {tag[rank]['confidence']:.2f}" if rank in tag else "-" for rank in ("primary", "secondary", "tertiary")]
        print(f"{result.name[:34]:<34} {cells[0]:<24} {cells[1]:<24} {cells[2]:<24} {tag['method']}")


def _show_front(front: str) -> None:
    """One chat completion, streamed, and one embedding, as an OpenAI client asks for them."""
    import httpx

    body = {"messages": [{"role": "user", "content": "Rename fetch_user to load_user."}], "max_tokens": 12, "seed": 1, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.Client(base_url=front, timeout=120) as http:
        model = http.get("/v1/models").json()["data"][0]["id"]
        with http.stream("POST", "/v1/chat/completions", json={**body, "model": model}) as answer:
            events = [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data: {")]
        text = "".join(event["choices"][0]["delta"].get("content", "") for event in events if event["choices"])
        vectors = http.post("/v1/embeddings", json={"input": ["pytest fixture", "helm chart"]}).json()["data"]
    print(f"model {model}: {len(events)} streamed events, {events[-1]['usage']['completion_tokens']} tokens: {text[:60]!r}")
    print(f"/v1/embeddings: {len(vectors)} vectors of {len(vectors[0]['embedding'])} floats (the embed application)")


SNAKE_GAME_COMMIT = "3f2a9c1" + hashlib.sha1(b"snake-game").hexdigest()[:33]
"""The commit 01_react_vite_scaffold.json says it made (`committed as 3f2a9c1`), in full: the demo's outcome links it,
so the build labels that session's rows with the agent action (seed 003 provenance in the curated tables)."""


def _show_provenance(url: str, run_tag: str) -> None:
    """The specification's curl examples: a token for a customer, an agent action at a commit, its outcome linking the
    commit it landed in (the one a replayed session made), then the queries by commit and by file."""
    import httpx

    commit = hashlib.sha1(f"{run_tag}-wrote".encode()).hexdigest()
    with httpx.Client(base_url=url, timeout=30) as http:
        token = http.post("/v1/tokens", json={"customer_id": "demo", "name": "CLI"}).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        action = http.post("/v1/events", headers=auth, json={
            "event_type": "agent_action", "actor_type": "agent", "actor_id": "cursor-v1", "tool": "scaffold",
            "intent": "scaffold the snake game with a tested engine", "model": "gpt-4", "files_written": ["src/game/engine.ts"],
            "repo": "snake-game", "branch": "main", "commit": commit}).json()
        http.post("/v1/events", headers=auth, json={"event_type": "outcome", "original_event_id": action["event_id"],
                                                    "status": "accepted", "linked_commit": SNAKE_GAME_COMMIT})
        by_commit = http.get(f"/v1/provenance/by-commit/{SNAKE_GAME_COMMIT[:7]}", headers=auth).json()["events"]
        by_file = http.get("/v1/provenance/by-file", params={"path": "src/game/engine.ts", "repo": "snake-game"}, headers=auth).json()["events"]
    print(f"token {token[:7]}... for customer demo; agent_action {action['event_id']} at {commit[:12]}, accepted into {SNAKE_GAME_COMMIT[:7]}")
    for event in by_commit[:3]:
        print(f"by-commit {SNAKE_GAME_COMMIT[:7]}: {event['actor_id']} {event['tool']} {event['intent']!r} -> {event['status']} "
              f"(linked by {', '.join(event.get('linked_by') or [])})")
    print(f"by-file src/game/engine.ts in snake-game: {len(by_file)} agent action(s) of this customer, newest first "
          "(the build labels the session that made the commit with them)")


HELD_OUT_PER_LANGUAGE = 2


def _datasets(lake: Path) -> None:
    """`trajforge datasets`: each sample checked against its sha256, normalized, then processed into splits."""
    from pipelines.datasets import cli

    cli.run_command(argparse.Namespace(assignments=[], config=None, lake=lake, stage="all", only=None, force=False,
                                       no_progress=True, json=False))


def _synth_records(lake: Path) -> None:
    """`trajforge synth-records run` on the shipped support-ticket schema: 4 records, each one call, over Ray workers."""
    from pipelines.synth_records.export import export_job
    from pipelines.synth_records.jobs import create_job
    from pipelines.synth_records.runner import run_job
    from pipelines.synth_records.settings import absolute_settings, load_synth_settings

    settings = absolute_settings(load_synth_settings(assignments=[("synth_records.lake", str(lake)),
                                                                  ("synth_records.peer_cpus", 0.25)]))
    schema_path = Path(__file__).resolve().parents[2] / "examples" / "synth_records" / "support_ticket.schema.json"
    files = create_job(settings, schema=json.loads(schema_path.read_text(encoding="utf-8")),
                       description="support tickets of a developer-tools company", records=4)
    base = run_job(settings, files.id, progress=False)
    print(f"job {files.id}: {base['status']}, {base['totalOk']} of {base['totalRecords']} records valid against "
          f"{schema_path.name} over {base['peerCount']} Ray workers ({files.dir})")
    for record in json.loads(export_job(files, "json", partial=True))[:2]:  # the untrained model: valid, not meaningful
        print("  " + json.dumps(record, ensure_ascii=True)[:160])
    print(f"  (trajforge synth-records export {files.id} --format csv --lake {lake})")


def _synth_and_teach(lake: Path, runs: Path) -> list[dict]:
    """Synthetic tasks, then the oracle teacher on all but a few per language; returns those held out."""
    from pipelines import synth_rules, teacher_srl

    report = synth_rules.run(lake, workers=2)
    print(f"synthetic tasks: {report['num_records']} of {report['candidates']} candidates verified in the sandbox "
          f"({', '.join(f'{k} {v}' for k, v in report['by_language'].items())}) -> {report['path']}")
    tasks = [json.loads(line) for line in Path(report["path"]).read_text(encoding="utf-8").splitlines() if line.strip()]
    ranked = sorted(tasks, key=lambda task: hashlib.sha256(task["task_id"].encode()).hexdigest())
    held_out = [task for language in sorted({t["language"] for t in tasks})
                for task in [t for t in ranked if t["language"] == language][:HELD_OUT_PER_LANGUAGE]]
    held_ids = {task["task_id"] for task in held_out}
    runs.mkdir(parents=True, exist_ok=True)
    teacher_tasks = runs / "demo-teacher-tasks.jsonl"
    write_atomic(teacher_tasks, "".join(json.dumps(t) + "\n" for t in tasks if t["task_id"] not in held_ids))
    sources = [{"path": str(teacher_tasks), "name": "synth_rules (all but the held-out)"},  # seed 002 8.2: and the datasets
               {"source": "processed", "splits": ["train"]}]
    settings = teacher_srl.load_teacher_settings(assignments=[("teacher.lake", str(lake)), ("teacher.sample", 0),
                                                              ("teacher.tasks", sources)])
    result = teacher_srl.run(settings)
    print(f"teacher: {result['ran']} tasks run, {result['skipped_finished']} already finished, {result['verified']} verified "
          f"({len(held_out)} tasks held out for the end)")
    print(Path(result["report"]).read_text(encoding="utf-8"))
    return held_out


def _build_and_show(lake: Path) -> None:
    from pipelines.build import load_build_settings, run_build
    from trajforge.cli import build_cmd, stats_cmd

    settings = load_build_settings(assignments=[("build.lake", str(lake))])
    manifest = run_build(settings)
    print(build_cmd.summary(manifest))
    _publish(lake, manifest["build_id"])
    _section(f"trajforge stats --build {manifest['build_id']} (DuckDB over the Parquet)")
    stats_cmd.run_command(argparse.Namespace(lake=str(lake), build=manifest["build_id"], json=False))
    return lake / "curated" / manifest["build_id"]


def _publish(lake: Path, build_id: str) -> None:
    """`trajforge lake publish` and `trajforge lake sync`: the build and the raw lake copied to a pyarrow filesystem URI
    (here a folder in the lake, standing for s3://bucket/prefix on a cluster)."""
    from pipelines import lake_sync
    from pipelines.build import publish
    from trajforge.lake import Lake

    shared = lake.resolve() / "shared"
    print(publish.summary(publish.publish_build(Lake.at(lake), build_id, (shared / "builds").as_uri())))
    print(lake_sync.summary(lake_sync.sync_lake(Lake.at(lake), (shared / "lake").as_uri(), progress=False)))


def _train(build_dir: Path, steps: int, runs: Path) -> Path:
    from learner.train import curve_text, train_for_demo

    started = time.monotonic()
    summary = train_for_demo(build_dir, steps, runs)
    print(curve_text(summary))
    rate = sum(summary["tokens_per_s"]) / max(1, len(summary["tokens_per_s"]))
    print(f"{summary['step']} steps in {time.monotonic() - started:.1f} s, {rate:,.0f} tokens/s; "
          f"metrics: {summary['run_dir']}/metrics.jsonl (TensorBoard: {summary['run_dir']}/tensorboard)")
    print(f"Hugging Face export: {summary['export']}")
    return Path(summary["export"])


def _show_lake(lake: Path) -> None:
    from pipelines.lake_info import lake_info, summary
    from trajforge.lake import Lake

    print(summary(lake_info(Lake.at(lake), limit=3)))


def _close_the_circle(export: Path, tasks: list[dict], lake: Path) -> None:
    """The trained model in a `GenerationActor` (transformers engine), the actor loop on the held-out tasks."""
    from actors.actor import start_actors
    from actors.run import run_loop
    from actors.settings import absolute_actor_settings, load_actor_settings

    settings = absolute_actor_settings(load_actor_settings(assignments=[
        ("actors.model", str(export)), ("actors.count", 1), ("actors.num_cpus", 0.5), ("actors.lake", str(lake)), ("actors.loop.max_steps", 2),
        ("actors.loop.max_tokens", 160), ("actors.loop.temperature", 0.0)]))
    actors = start_actors(settings)
    summaries = run_loop(actors, tasks, task_timeout_s=settings.loop.task_timeout_s)
    print(f"{'task':<44} {'language':<11} {'steps':>5}  verified")
    for task, summary in zip(tasks, summaries):
        print(f"{task['task_id'][:44]:<44} {task['language']:<11} {summary.get('steps', 0):>5}  {bool(summary.get('verified'))}")
    verified = sum(bool(summary.get("verified")) for summary in summaries)
    print(f"the sandbox verified {verified} of {len(tasks)} held-out tasks' actions from a model trained for a minute on CPU; "
          f"each step is in {lake / 'raw' / 'trajectories'} for the next build")
