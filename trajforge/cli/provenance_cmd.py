"""`trajforge provenance --commit SHA | --file PATH [--repo R] | --search`: which agent actions made this code, asked of
a running ingest service's provenance API (seed 003) with an API token, or, with `--build`, of a curated build's
`provenance` table with DuckDB (no service, no token), which also names the training rows labelled with them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from trajforge.cli.common import add_examples, nonblank, nonblank_path, positive_int

TOKEN_ENV, URL_ENV = "TRAJFORGE_TOKEN", "TRAJFORGE_URL"


EXAMPLES = """\
  TRAJFORGE_TOKEN=sk_... trajforge provenance --commit 3f2a9c1
  trajforge provenance --file src/auth.ts --repo acme/api
  trajforge provenance --build latest --commit 3f2a9c1      # from the newest build: no service, no token
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--commit", type=nonblank, help="the agent actions at this commit, or linked to it by an outcome")
    what.add_argument("--file", type=nonblank, help="the agent actions that wrote this file (a path as the agents report it, e.g. src/auth.ts)")
    what.add_argument("--search", action="store_true", help="the newest events matching --actor, --tool, --repo, --since (up to --limit)")
    parser.add_argument("--repo", help="only this repository (with --file or --search)")
    parser.add_argument("--actor", help="only this actor_id (with --search)")
    parser.add_argument("--tool", help="only this tool (with --search)")
    parser.add_argument("--since", help="only events at or after this ISO 8601 time (with --search)")
    parser.add_argument("--limit", type=positive_int, default=20, help="most events --search prints (default 20; the service caps it)")
    parser.add_argument("--url", default=os.environ.get(URL_ENV, "http://127.0.0.1:8000"),
                        help=f"the ingest service (default ${URL_ENV} or http://127.0.0.1:8000)")
    parser.add_argument("--token", help=f"an sk_ API token (default ${TOKEN_ENV}; prefer the variable: arguments show in the process list)")
    parser.add_argument("--json", action="store_true", help="print the service's JSON answer as it is")
    parser.add_argument("--build", type=nonblank, help="ask this curated build instead of the service: `latest`, `latest:<org>`, a build id or folder "
                                        "(every customer's actions, and the sft/trajectories/behavior rows labelled with them)")
    parser.add_argument("--lake", type=nonblank_path, default=Path("./lake"), help="the lake holding --build (default ./lake)")
    parser.add_argument("--customer", help="with --build: only this customer's actions")
    add_examples(parser, EXAMPLES)


def request_of(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The query's path and parameters."""
    from urllib.parse import quote

    if args.commit:
        return f"/v1/provenance/by-commit/{quote(args.commit, safe='')}", {}
    if args.file:
        return "/v1/provenance/by-file", {"path": args.file, **({"repo": args.repo} if args.repo else {})}
    params = {"actor_id": args.actor, "tool": args.tool, "repo": args.repo, "since": args.since, "limit": args.limit}
    return "/v1/events/search", {name: value for name, value in params.items() if value is not None}


def run_command(args: argparse.Namespace) -> int:
    import httpx

    from trajforge.errors import ConfigError, TrajforgeError

    if args.build:
        return _from_build(args)
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ConfigError(f"no API token: set {TOKEN_ENV}=sk_... (make one with POST {args.url.rstrip('/')}/v1/tokens) or pass --token")
    path, params = request_of(args)
    url = args.url.rstrip("/") + path
    try:
        answer = httpx.get(url, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.HTTPError as exc:
        raise TrajforgeError(f"no answer from {url} ({type(exc).__name__}: {exc}); is the ingest service running (trajforge serve)?") from None
    try:
        body = answer.json()
    except ValueError:
        raise TrajforgeError(f"{url} answered {answer.status_code} without JSON: is --url the ingest service?") from None
    if answer.status_code != 200:
        raise TrajforgeError(f"{url} answered {answer.status_code}: {body.get('message', body) if isinstance(body, dict) else body}")
    if args.json:
        print(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        print_events(body.get("events", []), sys.stdout)
    return 0


def print_events(events: list[dict[str, Any]], out) -> None:
    """One block per event: when, who (actor, tool, model), where (repo@branch commit), its outcome, intent and files."""
    if not events:
        print("no provenance events", file=out)
        return
    for event in events:
        if event.get("event_type") == "outcome":
            print(f"{event['timestamp']}  outcome {event['status']} of {event['original_event_id']}"
                  + (f" -> {event['linked_commit']}" if event.get("linked_commit") else ""), file=out)
            continue
        where = event["repo"] + (f"@{event['branch']}" if event.get("branch") else "") + f" {event['commit']}"
        model = f" ({event['model']})" if event.get("model") else ""
        outcome = " -> ".join(o["status"] + (f" in {o['linked_commit']}" if o.get("linked_commit") else "") for o in event.get("outcomes", []))
        print(f"{event['timestamp']}  {event['actor_id']} {event['tool']}{model}  {where}  [{outcome or 'no outcome'}]  {event['event_id']}", file=out)
        print(f"    intent: {event['intent']}", file=out)
        for file in event.get("files_written", []):
            print(f"    wrote:  {file}", file=out)


def _from_build(args: argparse.Namespace) -> int:
    from pipelines.lake_provenance import find_actions, labelled_rows
    from trajforge.lake import Lake

    build_dir = Lake.at(args.lake).resolve_build(args.build)
    events = find_actions(build_dir, commit=args.commit, file=args.file, repo=args.repo, actor=args.actor, tool=args.tool,
                          since=args.since, limit=args.limit, customer=args.customer)
    rows = labelled_rows(build_dir, [event["event_id"] for event in events])
    if args.json:
        print(json.dumps({"build_id": build_dir.name, "events": events, "training_rows": rows}, indent=2, ensure_ascii=False))
        return 0
    print_events(events, sys.stdout)
    print(f"rows of build {build_dir.name} labelled with these actions: "
          + ", ".join(f"{table} {found['rows']}" + (f" ({', '.join(found['sample'])}{' ...' if found['rows'] > len(found['sample']) else ''})"
                                                     if found["sample"] else "") for table, found in rows.items()))
    return 0
