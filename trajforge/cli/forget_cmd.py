"""`trajforge forget CONTRIBUTOR_ID`: a tombstone that leaves the contributor out of every later build."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trajforge.cli.common import add_examples, nonblank_path


EXAMPLES = """\
  trajforge forget 0123456789abcdef0123456789abcdef --reason "ticket 42"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("contributor_id", help="the contributor's 32-hex id, as the protocol carries it (trajforge.client.contributor_id_for)")
    parser.add_argument("--reason", default="", help="why (kept in the tombstone, e.g. a ticket number)")
    parser.add_argument("--lake", type=nonblank_path, default=Path("./lake"), help="lake root (default ./lake)")
    add_examples(parser, EXAMPLES)


def run_command(args: argparse.Namespace) -> int:
    from trajforge.errors import ConfigError
    from trajforge.lake import Lake
    from trajforge.tombstones import builds_holding, forget

    lake = Lake.at(args.lake)
    if not lake.root.is_dir():  # a mistyped --lake would hold the tombstone where no build ever reads it
        raise ConfigError(f"--lake: {lake.root} {'is not a folder' if lake.root.exists() else 'does not exist'}; give the lake the builds "
                          "read (nothing was written)")
    record = forget(lake, args.contributor_id, args.reason)
    print(json.dumps(record, indent=2))
    print(f"tombstone written to {lake.tombstones}; the next `trajforge build` leaves this contributor out (and rebuilds everything).")
    holding = builds_holding(lake, record["contributor_id"])
    if holding:
        from pipelines.build.publish import destinations

        print("builds published earlier still hold their rows; remove them once a new build is out: "
              + ", ".join(str(lake.build_dir(build_id)) for build_id in holding))
        copies = [f"{uri}/{build_id}" for uri, builds in sorted(destinations(lake).items()) for build_id in holding if build_id in builds]
        if copies:  # `trajforge lake publish` copied them there: learners elsewhere train on those
            print("and their copies that `trajforge lake publish` put on storage: " + ", ".join(copies))
    return 0
