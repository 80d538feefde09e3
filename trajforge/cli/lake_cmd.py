"""`trajforge lake publish BUILD URI`: copy a finished build to shared or object storage (pipelines/build/publish.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trajforge.cli.common import common_arguments


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
    publish.add_argument("--lake", type=Path, default=Path("./lake"), help="the lake holding the build (default ./lake)")
    publish.add_argument("--json", action="store_true", help="print what was done as JSON")
    common_arguments(publish, nested=True)


def run_command(args: argparse.Namespace) -> int:
    from pipelines.build.publish import publish_build, summary
    from trajforge.lake import Lake

    result = publish_build(Lake.at(args.lake), args.build, args.uri)
    print(json.dumps(result, indent=2) if args.json else summary(result))
    return 0
