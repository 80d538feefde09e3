"""`trajforge lake publish BUILD URI`: copy a finished build to shared or object storage (pipelines/build/publish.py);
`trajforge lake sync URI`: the raw lake to shared or object storage, incrementally (pipelines/lake_sync.py);
`trajforge lake pull URI`: a synced raw lake into this one (pipelines/lake_pull.py); `trajforge lake info`: what a lake
holds (pipelines/lake_info.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trajforge.cli.common import add_examples, common_arguments, nonblank_path, positive_int


EXAMPLES = """\
  trajforge lake info
  trajforge lake publish latest s3://bucket/builds
  trajforge lake sync s3://bucket/lake --only raw/trajectories
  trajforge lake pull s3://bucket/lake --lake ./lake
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    publish = verbs.add_parser(
        "publish", help="copy a finished build to a pyarrow filesystem URI (s3://bucket/prefix, gs://, hdfs://, file:///abs/path)",
        description="Copy a finished build to <URI>/<build id>/: every file its manifest lists, each read back and checked against "
                    "its sha256, then manifest.json (last: a build without it there is not published), then <URI>/LATEST. Run it "
                    "again after an interruption: files already there with the right size and sha256 are skipped. S3 options: "
                    "the URI's query (?endpoint_override=HOST:PORT&scheme=http&region=R) or AWS_ENDPOINT_URL, AWS_REGION and the "
                    "AWS credentials. The learner trains on it with --build <URI>/<build id> or <URI>/latest.")
    publish.add_argument("build", help="`latest`, `latest:<org>`, a build id of the lake, or a build folder")
    publish.add_argument("uri", help="where published builds live, e.g. s3://bucket/trajforge/builds")
    publish.add_argument("--lake", type=nonblank_path, default=Path("./lake"), help="the lake holding the build (default ./lake)")
    publish.add_argument("--json", action="store_true", help="print what was done as JSON")
    common_arguments(publish, nested=True)

    sync = verbs.add_parser(
        "sync", help="copy the raw lake to a pyarrow filesystem URI, sending only what changed since the last sync",
        description="Copy every file of <lake>/raw/ (envelope segments, events, provenance, trajectories, tasks, datasets, "
                    "tombstones) to the same path under URI, sending only files whose size or time changed since the last sync "
                    "(recorded in <lake>/state/sync/); each is hashed as it streams, its size read back, then <URI>/SYNC.json "
                    "lists every synced file with its sha256. Interrupted: run it again, it goes on where it stopped. Nothing "
                    "at the URI is deleted. Run it from cron or after each teacher job, e.g. every 10 minutes.")
    _transfer_arguments(sync, "where the raw lake goes, e.g. s3://bucket/trajforge/lake (S3 options as for publish)", "the lake to copy")

    pull = verbs.add_parser(
        "pull", help="bring a raw lake that `lake sync` put at a URI into this lake, downloading only what changed",
        description="Download the files <URI>/SYNC.json lists into the same paths of <lake>, each checked against the listed size "
                    "and sha256 before it is renamed into place; files unchanged since the last pull (recorded in "
                    "<lake>/state/pull/) or already here are not downloaded. A local file is replaced only when it is a prefix "
                    "of the listed one; one with bytes of its own is kept and counted. Then `trajforge build --lake <lake>`.")
    _transfer_arguments(pull, "where `trajforge lake sync` put the raw lake, e.g. s3://bucket/trajforge/lake", "the lake to bring it into")

    info = verbs.add_parser("info", help="what a lake holds: raw sources, datasets, builds, syncs",
                            description="Each raw source's files and bytes, the public datasets ingested and processed, the newest "
                                        "builds with their rows (and which one `latest` names), and where the raw lake was synced to "
                                        "or pulled from; read from files and manifests only, no Ray or service needed.")
    info.add_argument("--lake", type=nonblank_path, default=Path("./lake"), help="the lake (default ./lake)")
    info.add_argument("--builds", type=positive_int, default=10, metavar="N", help="how many builds to list, newest first (default 10)")
    info.add_argument("--json", action="store_true", help="print it as JSON")
    common_arguments(info, nested=True)
    add_examples(parser, EXAMPLES)


def _transfer_arguments(parser: argparse.ArgumentParser, uri_help: str, lake_help: str) -> None:
    """The arguments `sync` and `pull` share."""
    parser.add_argument("uri", help=uri_help)
    parser.add_argument("--lake", type=nonblank_path, default=Path("./lake"), help=f"{lake_help} (default ./lake)")
    parser.add_argument("--only", action="append", metavar="FOLDER", default=None,
                        help="only this folder of the raw lake, relative to the lake (repeatable), e.g. --only raw/trajectories")
    parser.add_argument("--json", action="store_true", help="print what was done as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    common_arguments(parser, nested=True)


def run_command(args: argparse.Namespace) -> int:
    from trajforge.lake import Lake

    if args.verb == "info":
        from pipelines.lake_info import lake_info
        from pipelines.lake_info import summary as info_summary

        if not Path(args.lake).is_dir():
            what = "is not a folder" if Path(args.lake).exists() else "does not exist"
            print(f"trajforge lake info: {Path(args.lake).resolve()} {what}: give the lake with --lake", file=sys.stderr)
            return 2
        found = lake_info(Lake.at(args.lake), args.builds)
        print(json.dumps(found, indent=2) if args.json else info_summary(found))
        return 0
    if args.verb == "sync":
        from pipelines.lake_sync import summary as sync_summary
        from pipelines.lake_sync import sync_lake

        if not Lake.at(args.lake).raw.is_dir():
            print(f"trajforge lake sync: {Path(args.lake).resolve() / 'raw'} does not exist: give the lake with --lake", file=sys.stderr)
            return 2
        result = sync_lake(Lake.at(args.lake), args.uri, only=args.only, progress=not args.no_progress)
        print(json.dumps(result, indent=2) if args.json else sync_summary(result))
        return 0
    if args.verb == "pull":
        from pipelines.lake_pull import pull_lake
        from pipelines.lake_pull import summary as pull_summary

        result = pull_lake(Lake.at(args.lake), args.uri, only=args.only, progress=not args.no_progress)
        print(json.dumps(result, indent=2) if args.json else pull_summary(result))
        return 0
    from pipelines.build.publish import publish_build, summary

    result = publish_build(Lake.at(args.lake), args.build, args.uri)
    print(json.dumps(result, indent=2) if args.json else summary(result))
    return 0
