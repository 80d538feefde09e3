"""`trajforge queue put|status|drop NAME`: fill and inspect the named task queue that `trajforge rollout --queue NAME` takes from.

The queue is a detached actor, so it lives in a running Ray cluster (`ray start --head`, or RAY_ADDRESS) and
outlives this command; a rollout started before or after takes the tasks as they arrive.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trajforge.cli.common import add_examples, common_arguments


EXAMPLES = """\
  trajforge queue put refactor-tasks lake/raw/tasks/synth_rules/tasks.jsonl
  trajforge queue status refactor-tasks
  trajforge rollout --queue refactor-tasks
  trajforge queue drop refactor-tasks
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    said = {"put": "append the tasks of a JSON-lines file to the queue, made on first use (every line is checked first: "
                   "a bad one queues nothing)",
            "status": "print the tasks waiting and the tasks out on lease to a rollout, as JSON",
            "drop": "remove the queue and every task still in it"}
    put, status, drop = (verbs.add_parser(verb, help=text, description=text[:1].upper() + text[1:] + ".") for verb, text in said.items())
    for verb in (put, status, drop):
        verb.add_argument("name", help="the queue's name (rollout --queue NAME)")
    put.add_argument("tasks", help="JSON lines of tasks, each with task_id, instruction, language and files or pre")
    for verb in (put, status, drop):
        common_arguments(verb, nested=True)
        verb.add_argument("--address", default="auto", help="the Ray cluster holding the queue (default auto: the running one)")
    add_examples(parser, EXAMPLES)


def run_command(args: argparse.Namespace) -> int:
    from actors.rollout import read_tasks
    from actors.task_queue import connect_cluster, drop_queue, task_queue

    tasks = read_tasks(Path(args.tasks), hint="") if args.verb == "put" else []  # all of them checked before any is queued
    connect_cluster(args.address)
    if args.verb == "put":
        ready = task_queue(args.name).put_nowait_batch(tasks)
        print(f"queued {len(tasks)} tasks in {args.name!r}; {ready} now waiting (trajforge rollout --queue {args.name})")
    elif args.verb == "status":
        print(json.dumps({"queue": args.name, **task_queue(args.name, create=False).sizes()}))
    else:
        drop_queue(args.name)
        print(f"dropped queue {args.name!r}")
    return 0
