"""Schema-first synthetic records (seed 001, DataGems): one LLM call per record, the records split into ranges that
Ray workers (peers) generate, progress written as they go, the merged result exported as JSON or CSV.

    trajforge synth-records draft --description "support tickets of a SaaS product" --out schema.json
    trajforge synth-records run --schema schema.json --description "support tickets" --records 50
    trajforge synth-records run --description "support tickets" --records 50    # drafts the schema itself first
    trajforge synth-records status JOB_ID | list | resume JOB_ID
    trajforge synth-records export JOB_ID --format csv --out tickets.csv
    python -m pipelines.synth_records <the same>

The schema is a JSON Schema (2020-12) of one record, a JSON object: given with --schema (what a researcher usually
does) or drafted by one call from the description and instructions. Either way it is sanitized (a wrong `$schema`
URL, property values that are not schemas) and validated against the 2020-12 meta-schema; an invalid one is refused
with the reason. Each record is one call with the schema as the structured output, parsed and validated against
it; a failure is retried once (synth_records.retry_inference_on_failure) and otherwise recorded with its index.
Jobs live in <lake>/synth_records/jobs/<id>/; a run killed midway is resumed with `resume`, which keeps every record
already written and generates only the rest. The engine is the generation actors' (actors/engines): `transformers`
with the embedded small model by default, or `openai` for any OpenAI-compatible endpoint, this project's generate
front included (--set synth_records.engine=openai --set synth_records.openai.base_url=http://127.0.0.1:8000/generate
--set synth_records.model=NAME). A CLI job needs no login: the job's owner is the local user.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from trajforge.cli.common import common_arguments, merge_assignments, nonblank_path, positive_int
from trajforge.errors import ConfigError
from trajforge.settings import Assignment, parse_assignments

ROOTS = ("synth_records",)
VERBS = {
    "draft": "draft a schema from a description with one call; print it or write it (--out), sanitized and validated",
    "run": "create a job (from --schema, or a schema drafted first) and generate its records on Ray, with a progress bar",
    "resume": "go on with a job whose run was killed or failed, keeping every record already written; the rest is "
              "generated with the job's recorded inference (engine, model, endpoint, sampling), a --set overriding one",
    "status": "print a job's base, its peers' states and (--details) its description, schema and inference, as JSON",
    "list": "list the lake's jobs and the metrics over them",
    "export": "write a job's records merged in index order as JSON or CSV (nested values JSON-encoded in CSV cells)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (__doc__.split("\n\n", 1)[1] + "\nVERB --help explains each verb. Config: configs/synth_records.yaml "
                     "(section synth_records).")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    made = {name: verbs.add_parser(name, help=summary, description=summary) for name, summary in VERBS.items()}
    for name in ("draft", "run"):
        made[name].add_argument("--description", default="", help="what the dataset is about (run: required with or without --schema)")
        made[name].add_argument("--instructions", default="", help="how its records should be (style, constraints, vocabulary)")
        made[name].add_argument("--dataset-mode", action="store_true", help="records are training examples (input and expected output)")
    made["draft"].add_argument("--out", type=Path, default=None, help="write the schema here (default: print it)")
    run = made["run"]
    run.add_argument("--schema", type=Path, default=None, help="the record's JSON Schema file (default: draft one from --description)")
    run.add_argument("--records", type=positive_int, required=True, help="how many records (at most synth_records.max_records_per_job, default 200)")
    run.add_argument("--title", default="", help="the job's title (default: the description's first line)")
    run.add_argument("--peers", type=positive_int, default=None, help="Ray workers splitting the records (default synth_records.peers)")
    for name in ("status", "resume", "export"):
        made[name].add_argument("job", help="the job's id (trajforge synth-records list)")
    made["status"].add_argument("--details", action="store_true", help="also the description, instructions, schema and inference")
    made["list"].add_argument("--json", action="store_true", help="print JSON instead of a table")
    export = made["export"]
    export.add_argument("--format", choices=("json", "csv"), default="json", help="json (an array of records) or csv (default json)")
    export.add_argument("--out", type=Path, default=None, help="write the export here (default: print it)")
    export.add_argument("--include-failed", action="store_true", help="also the failed records, with their index and error")
    export.add_argument("--partial", action="store_true", help="export a job that has not succeeded (what it has so far)")
    for name in ("run", "resume"):
        made[name].add_argument("--no-progress", action="store_true", help="no progress bar")
    for verb in made.values():
        verb.add_argument("--config", type=Path, default=None, help="config file (default configs/synth_records.yaml)")
        verb.add_argument("--lake", type=nonblank_path, default=None, help="the lake holding the jobs (default synth_records.lake, ./lake)")
        common_arguments(verb, nested=True, command="synth-records")


def config_roots(args: argparse.Namespace) -> tuple[str, ...]:
    return ROOTS


def _settings(args: argparse.Namespace, make_model: bool) -> Any:
    from pipelines.synth_records.settings import absolute_settings, load_synth_settings
    from trajforge.lake import refuse_a_file

    command = f"trajforge {args.command}" if getattr(args, "command", None) else "python -m pipelines.synth_records"
    assignments = parse_assignments(args.assignments, ROOTS, f"{command} {args.verb}")
    if args.lake is not None:
        assignments.append(Assignment("synth_records.lake", str(args.lake), "--lake"))
    if getattr(args, "peers", None) is not None:
        assignments.append(Assignment("synth_records.peers", args.peers, "--peers"))
    config = args.config and _existing(args.config)
    if args.verb == "resume":  # the rest of a job is generated as its start was, unless a --set says otherwise
        assignments = _recorded(load_synth_settings(config, assignments), args.job, assignments) + assignments
    settings = absolute_settings(load_synth_settings(config, assignments), make_model=make_model)
    refuse_a_file(settings.lake, "synth_records.lake (--lake)", "the lake that holds the jobs")
    return settings


def _recorded(settings: Any, job_id: str, given: list[Any]) -> list[Assignment]:
    """The job's recorded inference (engine, model, endpoint, max_tokens, temperature, seed, retry) as assignments,
    less those the command line sets."""
    from pipelines.synth_records.jobs import recorded_settings
    from pipelines.synth_records.settings import absolute_settings
    from pipelines.synth_records.store import JobFiles

    inference = JobFiles.existing(absolute_settings(settings, make_model=False).lake, job_id).details().get("inference") or {}
    named = {assignment[0] for assignment in given}
    if "synth_records.engine" in named:  # another engine: the recorded model and endpoint were the old one's
        named |= {"synth_records.model", "synth_records.openai.base_url"}
    return [Assignment(path, value, f"job {job_id}'s inference ({path})") for path, value in recorded_settings(inference).items()
            if path not in named]


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(f"config file {path} given with --config not found: check the path")
    return path


def _engine(settings: Any) -> Any:
    from actors.engines.factory import build_engine

    return build_engine(settings.actor_settings())


def _write(text: str, out: Path | None) -> None:
    from trajforge.atomic import write_atomic

    if out is None:
        sys.stdout.write(text)
    else:
        write_atomic(out, text)
        print(f"wrote {out}", file=sys.stderr)


def _draft(args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    from pipelines.synth_records.generate import draft_schema
    from pipelines.synth_records.jobs import check_input

    check_input(settings, args.description, args.instructions)
    draft = draft_schema(_engine(settings), args.description, args.instructions, settings, args.dataset_mode)
    for fix in draft["fixes"]:
        print(f"schema sanitized: {fix}", file=sys.stderr)
    return draft


def _read_schema(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"schema file {path} given with --schema not found: check the path") from None
    except OSError as exc:  # a folder, no permission to read it
        raise ConfigError(f"schema file {path} given with --schema cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"schema file {path} is not JSON: {exc}") from None


def run_command(args: argparse.Namespace) -> int:
    from pipelines.synth_records.store import JobFiles

    merge_assignments(args)
    settings = _settings(args, make_model=args.verb in ("draft", "run", "resume"))
    if args.verb == "draft":
        _write(json.dumps(_draft(args, settings)["schema"], indent=2, ensure_ascii=False) + "\n", args.out)
    elif args.verb in ("run", "resume"):
        return _run(args, settings)
    elif args.verb == "status":
        from pipelines.synth_records.runner import is_running

        files = JobFiles.existing(settings.lake, args.job)
        base = files.base()
        shown = {"job": base, "peers": files.peer_states()}
        if base["status"] == "running" and not is_running(files):
            shown["note"] = f"no process runs this job now (its run was killed): trajforge synth-records resume {args.job}"
        if args.details:
            shown["details"] = files.details()
        print(json.dumps(shown, indent=2, ensure_ascii=False))
    elif args.verb == "list":
        _list(settings, args.json)
    else:
        from pipelines.synth_records.export import export_job

        _write(export_job(JobFiles.existing(settings.lake, args.job), args.format, args.include_failed, args.partial), args.out)
    return 0


def _run(args: argparse.Namespace, settings: Any) -> int:
    from pipelines.synth_records.jobs import check_input, create_job
    from pipelines.synth_records.runner import run_job

    if args.verb == "run":
        check_input(settings, args.description, args.instructions, args.records)
        draft = None if args.schema else _draft(args, settings)
        schema = _read_schema(args.schema) if args.schema else draft["schema"]
        files = create_job(settings, schema=schema, description=args.description, instructions=args.instructions,
                           records=args.records, title=args.title, dataset_mode=args.dataset_mode, draft=draft)
        print(f"job {files.id}: {args.records} records over {files.base()['peerCount']} peers in {files.dir} "
              f"(if stopped: trajforge synth-records resume {files.id})", file=sys.stderr, flush=True)
        job_id = files.id
    else:
        job_id = args.job
    try:
        base = run_job(settings, job_id, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"trajforge synth-records: interrupted; {_kept(settings.lake, job_id)}: trajforge synth-records resume {job_id}", file=sys.stderr)
        raise
    except Exception as exc:
        from trajforge.storage_full import StorageFull, space_left, storage_full

        if not storage_full(exc):
            raise
        raise StorageFull(f"no space left for job {job_id} ({space_left(settings.lake)}): every record written so far is kept; "
                          f"free space, then: trajforge synth-records resume {job_id}", settings.lake) from exc
    print(json.dumps(base, indent=2, ensure_ascii=False))
    return 0 if base["status"] == "succeeded" else 1


def _kept(lake: Path, job_id: str) -> str:
    """What a stopped run of the job keeps: the records its peers wrote, each generated once."""
    from pipelines.synth_records.results import read_results
    from pipelines.synth_records.store import JobFiles

    files = JobFiles(lake, job_id)
    base = files.base()
    written = [record for peer in base["peers"] for record in read_results(files.peer_results_path(peer)).values()]
    return (f"job {job_id} keeps the {len(written)} of its {base['totalRecords']} records generated so far "
            f"({sum(bool(record.get('ok')) for record in written)} valid), and a resume generates only the others")


def _list(settings: Any, as_json: bool) -> None:
    from pipelines.synth_records.store import JobFiles, compute_metrics, list_job_ids

    bases = [JobFiles(settings.lake, job_id).base() for job_id in list_job_ids(settings.lake)]
    metrics = compute_metrics(settings.lake)
    if as_json:
        print(json.dumps({"jobs": bases, "metrics": metrics}, indent=2, ensure_ascii=False))
        return
    print(f"{'id':<24} {'status':<10} {'ok':>5} {'failed':>6} {'records':>7}  title")
    for base in bases:
        print(f"{base['id']:<24} {base['status']:<10} {base['totalOk']:>5} {base['totalFailed']:>6} {base['totalRecords']:>7}  {base['title']}")
    print(" ".join(f"{key}={value}" for key, value in metrics.items()))


def main(argv: list[str] | None = None) -> int:
    from trajforge.cli.common import module_main

    return module_main("pipelines.synth_records", __doc__.split("\n\n", 1)[0], add_arguments, config_roots, run_command, argv)
