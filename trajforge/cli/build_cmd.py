"""`trajforge build`: the raw lake -> curated Parquet (pipelines/build), then a short summary."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from trajforge.cli.common import add_examples, nonblank, nonblank_path


EXAMPLES = """\
  trajforge build                                   # ./lake: only new or changed sessions
  trajforge build --full --no-embed
  trajforge build --org acme --publish-to s3://bucket/builds
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("A build writes <lake>/curated/<build id>/: the trajectories, sft, behavior, duplicates and provenance (agent actions with their outcomes) tables as Parquet and "
                     "manifest.json (row counts, exclusions, redactions, quarantined records, the sha256 of every file, the config "
                     "hash and code version), then points curated/LATEST at it (an --org build: curated/LATEST.org=<org>, so `latest` stays the whole lake's; "
                     "name it `latest:<org>`). Without --full it builds only the sessions that "
                     "are new or changed since the newest build with the same config and org. A corrupt segment or a malformed "
                     "record never stops it: it is quarantined and listed in the manifest. When <lake>/processed/datasets/ exists (`trajforge datasets`), "
                     "the public code-edit datasets' train and dev records become sft rows too (source `dataset`; their test split is held out; "
                     "build.datasets.enabled: false leaves them out); teacher and actor runs of a test record's task become sft rows of split "
                     "test, which the learner never reads. `trajforge stats` shows what a build holds.")
    parser.add_argument("--config", type=Path, default=None, help="pipeline config (default: configs/pipeline.yaml)")
    parser.add_argument("--lake", type=nonblank_path, default=None, help="the lake to build from and into (default: build.lake, ./lake)")
    parser.add_argument("--full", action="store_true", help="build every session again instead of only new or changed ones")
    parser.add_argument("--org", default=os.environ.get("TRAINING_ORG_ID") or None,
                        help="keep only this organization's data: its telemetry events (their org_id) and the field sessions of "
                             "its contributors (listed in build.orgs); default: $TRAINING_ORG_ID")
    parser.add_argument("--no-embed", action="store_true", help="skip embeddings (domain tags from keywords)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON instead of a summary")
    parser.add_argument("--publish-to", metavar="URI", type=nonblank, default=None,
                        help="then copy the finished build to this pyarrow filesystem URI (s3://bucket/prefix, gs://, hdfs://, "
                             "file:///abs/path), manifest last, and point <URI>/LATEST at it: `trajforge lake publish --help`")
    add_examples(parser, EXAMPLES)


def config_roots(args: argparse.Namespace) -> tuple[str, ...]:
    return ("build",)


def summary(manifest: dict) -> str:
    rows, sessions = manifest["rows"], manifest["sessions"]
    lines = [
        f"build {manifest['build_id']}  ({manifest['seconds']} s, parent {manifest['parent_build_id'] or '-'})",
        f"  sessions: {sessions['ready']} ready, {sessions['built']} built, {sessions['reused']} reused, "
        f"{sessions['pending_open']} still open, {sessions['quarantined']} quarantined, {sessions.get('forgotten', 0)} of forgotten contributors left out"
        + (f", {sessions.get('other_orgs', 0)} of other organizations left out" if manifest.get("org") else ""),
        f"  rows: " + ", ".join(f"{table} {count}" for table, count in rows.items()),
        f"  tiers: " + ", ".join(f"{tier} {count}" for tier, count in manifest["tiers"].items()),
        f"  exclusions: " + (", ".join(f"{reason} {count}" for reason, count in manifest["exclusions"].items()) or "none"),
        f"  redactions: " + (", ".join(f"{kind} {count}" for kind, count in manifest["redactions"].items()) or "none"),
        f"  duplicates dropped: exact {manifest['dedup']['exact']}, near {manifest['dedup']['near']}",
        f"  quarantined records: {manifest['quarantine']['count']}",
    ]
    telemetry = manifest.get("telemetry") or {}
    if telemetry.get("events"):
        lines.append(f"  telemetry events: {telemetry['events']} -> {telemetry['sft_rows']} sft rows, {telemetry['behavior_rows']} behavior rows "
                     f"({telemetry['duplicates']} stored twice, {telemetry['unusable_turns']} turns without an answer)")
        found = telemetry.get("redactions") or {}
        lines.append("  telemetry redactions: " + (", ".join(f"{kind} {count}" for kind, count in sorted(found.items())) or "none"))
    provenance = manifest.get("provenance") or {}
    if provenance.get("files"):
        labelled = provenance.get("labelled_rows") or {}
        lines.append(f"  provenance (seed 003): {provenance['agent_actions']} agent actions, {provenance['outcomes']} outcomes "
                     f"({provenance['orphan_outcomes']} naming {provenance['missing_actions']} actions the lake lacks), {provenance['left_out']} events "
                     "left out; rows labelled: " + ", ".join(f"{table} {labelled.get(table, 0)}" for table in ("sft", "trajectories")))
    held = manifest.get("held_out_loop") or {}
    if held.get("task_ids"):
        sessions_of, rows_of = held.get("sessions") or {}, held.get("sft_rows") or {}
        lines.append(f"  held-out test tasks: {held['task_ids']} (processed datasets' test split); loop runs on them kept as split test: "
                     + ", ".join(f"{source} {sessions_of.get(source, 0)} sessions / {rows_of.get(source, 0)} sft rows" for source in ("teacher", "actor"))
                     + (" (built again: the test tasks changed)" if held.get("loop_sessions_rebuilt") else ""))
    datasets = manifest.get("datasets")
    if datasets:
        rows_of = datasets.get("sft_rows") or {}
        origin = f", reused from build {datasets['reused_from']}" if datasets.get("reused_from") else ""
        lines.append(f"  public datasets: {rows_of.get('train', 0)} train + {rows_of.get('dev', 0)} dev sft rows from "
                     f"{sum(1 for item in (datasets.get('datasets') or {}).values() if item.get('train') or item.get('dev'))} datasets, "
                     f"{datasets.get('test_rows_held_out', 0)} test records held out, {datasets.get('duplicates', 0)} duplicates dropped{origin}"
                     + (f" ({datasets['error']})" if datasets.get("error") else ""))
        for name, item in sorted((datasets.get("datasets") or {}).items()):
            lines.append(f"    {name} ({item.get('license') or '?'}): train {item.get('train', 0)}, dev {item.get('dev', 0)}, "
                         f"test held out {item.get('test_held_out', 0)}" + (f", {item['left_out_by_share']} left out by train_share" if item.get("left_out_by_share") else ""))
        found = datasets.get("redactions") or {}
        lines.append("  dataset redactions: " + (", ".join(f"{kind} {count}" for kind, count in sorted(found.items())) or "none"))
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    from pipelines.build import load_build_settings, run_build
    from trajforge.cluster import warn_if_cpus_taken, warn_if_cpus_taken_together
    from trajforge.settings import parse_assignment
    from trajforge.settings.job_paths import absolute_data_paths, names_local_folder

    assignments = [parse_assignment(item) for item in args.assignments]
    if args.lake is not None:
        assignments.append(("build.lake", str(args.lake)))
    if args.no_embed:
        assignments.append(("build.embedding.enabled", False))
    settings = load_build_settings(args.config, assignments)
    models = {"build.tokenizer": settings.tokenizer, "build.embedding.model": settings.embedding.model}
    paths = {"build.lake": settings.lake, **{field: name for field, name in models.items() if names_local_folder(name)}}
    if absolute := absolute_data_paths(paths, "--lake /shared/lake"):  # the build's tasks and actors run in Ray's folder
        settings = load_build_settings(args.config, [*assignments, *absolute])
    warn_if_cpus_taken(settings.cpus_per_task, "build.cpus_per_task", "the build's tasks")
    if settings.embedding.enabled:
        warn_if_cpus_taken(settings.embedding.cpus, "build.embedding.cpus", "the build's embedding actors (--no-embed: none)")
        actors = 1 if settings.embedding.num_gpus else settings.embedding.actors  # on GPUs, one tokenizing task holds the CPUs
        warn_if_cpus_taken_together([("build.cpus_per_task", settings.cpus_per_task, 1), ("build.embedding.cpus", settings.embedding.cpus, actors)],
                                    "the build's tasks and its embedding actors (--no-embed: none)")
    if args.publish_to:
        from trajforge.lake_fs import open_uri

        open_uri(args.publish_to)  # a URI pyarrow cannot open is refused before the build, not after it
    try:
        # `--org ""` is no filter, as an empty TRAINING_ORG_ID is (it built the whole lake's sessions without their telemetry)
        manifest = run_build(settings, full=args.full, org=args.org or None, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"trajforge build: interrupted, nothing published: {interrupted_state(settings.lake)}", file=sys.stderr)
        raise
    except Exception as exc:
        from trajforge.storage_full import StorageFull, space_left, storage_full

        if not storage_full(exc):
            raise
        raise StorageFull(f"no space left for the build ({space_left(settings.lake)}): the build stopped and "
                          f"nothing was published (free space first): {interrupted_state(settings.lake)}", settings.lake) from exc
    if not args.json:
        print(summary(manifest), flush=True)
    published = publish_to(settings.lake, manifest["build_id"], args.publish_to) if args.publish_to else None
    if args.json:
        print(json.dumps({**manifest, "published": published} if published else manifest, indent=2))
    elif published:
        from pipelines.build.publish import summary as publish_summary

        print(publish_summary(published))
    return 0


def publish_to(lake_root, build_id: str, uri: str) -> dict:
    """`--publish-to`: copy the build just made; a failure says the local build stands and how to finish the copy."""
    from pipelines.build.publish import publish_build
    from trajforge.errors import TrajforgeError
    from trajforge.lake import Lake
    from trajforge.lake_fs import redacted

    again = f"`trajforge lake publish {build_id} {redacted(uri)} --lake {lake_root}`"
    try:
        return publish_build(Lake.at(lake_root), build_id, uri)
    except KeyboardInterrupt:
        print(f"trajforge build: publishing interrupted; build {build_id} is complete locally, not published: run {again}", file=sys.stderr)
        raise
    except TrajforgeError as exc:
        raise TrajforgeError(f"build {build_id} is complete locally, but publishing it failed: {exc}; then run {again}") from exc


def interrupted_state(lake_root) -> str:
    """What an interrupted build leaves: the build `latest` still names, and how to go on."""
    from trajforge.lake import Lake

    latest = Lake.at(lake_root).latest_build_id(None)
    kept = f"curated/LATEST still names {latest}" if latest else "there is no finished build yet"
    return f"{kept}; run the same command again to build (the next build removes the unfinished work folder)"
