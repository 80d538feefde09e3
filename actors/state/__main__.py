"""`python -m actors.state dump <task_id>`: print a task's stored state (for debugging actor runs)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from actors.state import DEFAULT_DB, State, StateStore, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actors.state", description=__doc__)
    parser.add_argument("--db", type=Path, default=Path(DEFAULT_DB), help=f"state database (default {DEFAULT_DB})")
    verbs = parser.add_subparsers(dest="verb", required=True)
    dump = verbs.add_parser("dump", help="print one task's state as JSON, with its version")
    dump.add_argument("task_id")
    dump.add_argument("--render", action="store_true", help="print the <state> block a prompt would get instead")
    verbs.add_parser("list", help="print the task ids that have a state")
    args = parser.parse_args(argv)
    if not args.db.exists():
        print(f"no state database at {args.db} (pass --db)", file=sys.stderr)
        return 2
    store = StateStore(args.db)
    if args.verb == "list":
        print("\n".join(store.tasks()))
        return 0
    try:
        record = store.dump(args.task_id)
    except KeyError:
        print(f"no state for task {args.task_id!r} in {args.db}", file=sys.stderr)
        return 1
    print(render(State.model_validate(record["state"])) if args.render else json.dumps(record, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
