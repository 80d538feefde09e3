"""`trajforge datasets` and `python -m pipelines.datasets`: ingest, process and report the public code-edit datasets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EPILOG = """\
Stages (--stage, default all):
  ingest   for every enabled dataset of datasets.catalog (configs/datasets.yaml): fetch its source (a local file or
           folder, or an https URL streamed to a .partial file, which a cut download or a killed run continues
           from its last byte next time) and check its sha256 and size against the manifest in the config; store it untouched in <lake>/raw/datasets/<name>/source/, the records in the common form
           {instruction, pre, post, language, tags} in normalized/part-*.jsonl, and _meta.json (source, version,
           license, downloaded_at, sha256, num_records). The folder is published in one rename: a killed run leaves
           the previous version. A dataset already ingested from the same sha256 is skipped (--force: again).
           A source of several data files, or a JSON-lines file over datasets.split_mb, is normalized one file
           or piece per Ray task on this node.
           A record its adapter cannot turn into pre/post (AgentPack: a patch of several files or hunks; SmellyCode:
           no refactored code) is counted by reason in _ingest.json and the report, never silently dropped.
  process  a Ray Data job over the ingested datasets: confirm each record's language (file extension and an ast-grep
           parse), leave out inputs over datasets.max_input_tokens, keep the first of identical (instruction, pre)
           pairs across datasets (catalog order), split train/dev/test by a hash, and write
           <lake>/processed/datasets/<language>/<split>.jsonl with manifest.json, and reports/datasets/<name>.md.

A sha256 or size mismatch names both values and keeps nothing; a damaged record names its file and line.
Examples:
  trajforge datasets                                    # the sample datasets of examples/datasets into ./lake
  trajforge datasets --only commitpackft --force        # ingest one dataset again
  trajforge datasets --set datasets.max_input_tokens=1024 --stage process"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from trajforge.cli.common import nonblank_path

    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", type=Path, default=None, help="datasets config (default: configs/datasets.yaml)")
    parser.add_argument("--lake", type=nonblank_path, default=None, help="the lake to write into (default: datasets.lake, ./lake)")
    parser.add_argument("--stage", choices=["all", "ingest", "process"], default="all", help="what to run (default: all)")
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        help="ingest only this dataset of the catalog (repeatable; enabled or not); processing always covers "
                             "every enabled dataset too, since its output is deduplicated across them all")
    parser.add_argument("--force", action="store_true", help="ingest again even when the source's sha256 is already in the lake")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def config_roots(args: argparse.Namespace) -> tuple[str, ...]:
    return ("datasets",)


def _settings(args: argparse.Namespace):
    from pipelines.datasets.settings import load_datasets_settings
    from trajforge.settings import parse_assignment
    from trajforge.settings.job_paths import absolute_data_paths

    assignments = [parse_assignment(item) for item in args.assignments]
    if args.lake is not None:
        assignments.append(("datasets.lake", str(args.lake)))
    settings = load_datasets_settings(args.config, assignments)
    paths = {"datasets.lake": settings.lake, "datasets.reports": settings.reports,
             **{f"datasets.catalog.{name}.source": spec.source for name, spec in settings.catalog.items() if not spec.is_url}}
    if absolute := absolute_data_paths(paths, "--lake /shared/lake"):  # Ray's tasks run in another folder
        settings = load_datasets_settings(args.config, [*assignments, *absolute])
    return settings


def run_command(args: argparse.Namespace) -> int:
    from pipelines.datasets.ingest import as_dict, ingest_all
    from pipelines.datasets.process import process, processed_path
    from pipelines.datasets.report import write_reports

    settings = _settings(args)
    progress = not args.no_progress
    result: dict = {}
    if args.stage in ("all", "ingest"):
        from trajforge.cluster import init_ray

        init_ray()  # a source of several files is normalized one file per Ray task (pipelines/datasets/normalize.py)
        result["ingested"] = [as_dict(item) for item in ingest_all(settings, args.only, force=args.force, progress=progress)]
    if args.stage in ("all", "process"):
        from trajforge.cluster import warn_if_cpus_taken

        names = settings.to_process(args.only)
        warn_if_cpus_taken(settings.cpus_per_task, "datasets.cpus_per_task", "the datasets job's tasks")
        manifest = process(settings, names, progress=progress)
        reports = write_reports(manifest, settings.reports)
        result["processed"] = {"path": str(processed_path(settings)), "files": manifest["files"], "seconds": manifest["seconds"],
                               "reports": [str(path) for path in reports],
                               "datasets": {name: {key: stats[key] for key in ("records", "kept", "dropped", "not_converted")}
                                            for name, stats in manifest["datasets"].items()}}
    print(json.dumps(result, indent=2) if args.json else summary(result))
    return 0


def summary(result: dict) -> str:
    lines = []
    for item in result.get("ingested", []):
        skipped = ", ".join(f"{reason} {count}" for reason, count in item.get("not_converted", {}).items())
        lines.append(f"{item['name']}: {item['status']}, {item['num_records']} records"
                     f"{f' (not converted: {skipped})' if skipped else ''}, sha256 {item['sha256'][:12]}… ({item['path']})")
    processed = result.get("processed")
    if processed:
        for name, stats in processed["datasets"].items():
            dropped = ", ".join(f"{reason} {count}" for reason, count in stats["dropped"].items()) or "none"
            skipped = ", ".join(f"{reason} {count}" for reason, count in stats.get("not_converted", {}).items())
            lines.append(f"{name}: kept {stats['kept']} of {stats['records']} (dropped: {dropped})"
                         f"{f'; not converted at ingestion: {skipped}' if skipped else ''}")
        lines.append("splits: " + ", ".join(f"{item['path']} {item['rows']}" for item in processed["files"] if item["rows"]))
        lines.append(f"written to {processed['path']} in {processed['seconds']} s; reports: {', '.join(processed['reports'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from pipelines.datasets import __doc__ as doc
    from trajforge.cli.common import module_main

    return module_main("pipelines.datasets", (doc or "").split("\n\n")[0], add_arguments, config_roots, run_command, argv)


if __name__ == "__main__":
    sys.exit(main())
