"""`python -m actors.state dump <task_id> [--lake LAKE | --db PATH]`: print a task's stored state (for debugging actor runs).

Exit status: 0 printed; 1 no state for that task (the message names the lake's other state database, the
teacher's `teacher_states.db` or the actors' `states.db`, where that one has it); 2 no database there, or a file
that is not a state database or is damaged (a lake with no `states.db` but a `teacher_states.db`: the message
names that one); 141 the reader closed the pipe early (`... | head`)."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from actors.state import State, StateStore, render
from actors.state.store import StateDatabaseError

DB_HELP = "state database (default: the actors settings' lake, <actors.lake>/state/states.db)"
LAKE_HELP = "the lake a rollout wrote to (trajforge rollout --lake): its database, <lake>/state/states.db"


def main(argv: list[str] | None = None) -> int:
    from trajforge.cli.pipes import quiet_when_reader_leaves

    return quiet_when_reader_leaves(lambda: run(argv))


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actors.state", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=None, help=DB_HELP)
    parser.add_argument("--lake", type=Path, default=None, help=LAKE_HELP)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{dump,list}")
    dump = verbs.add_parser("dump", help="print one task's state as JSON, with its version")
    dump.add_argument("task_id", help="the task's id, as in its step records (python -m actors.state list names them)")
    dump.add_argument("--render", action="store_true", help="print the <state> block a prompt would get instead")
    listing = verbs.add_parser("list", help="print the task ids that have a state")
    for verb in (dump, listing):  # --db and --lake after the verb too; SUPPRESS keeps one given before it
        verb.add_argument("--db", type=Path, default=argparse.SUPPRESS, help=DB_HELP)
        verb.add_argument("--lake", type=Path, default=argparse.SUPPRESS, help=LAKE_HELP)
    args = parser.parse_args(argv)
    if args.verb == "dump" and not args.task_id:
        parser.error("dump needs a task id (python -m actors.state list names them)")
    if args.lake is not None:
        if args.db is not None:
            parser.error("--db and --lake both name the database: give one")
        args.db = args.lake / "state" / "states.db"
    if args.db is None:
        from actors.settings import load_actor_settings
        from trajforge.errors import TrajforgeError

        try:
            args.db = load_actor_settings().state_db
        except TrajforgeError as exc:  # a bad config file or override: said in one message, as trajforge commands do
            print(f"python -m actors.state: the default database comes from the actors settings, which are wrong: {exc}\n"
                  "fix them, or pass --db <lake>/state/states.db", file=sys.stderr)
            return 2
    if not args.db.exists():
        elsewhere = _held_elsewhere(args.db, args.task_id) if args.verb == "dump" else _other_database(args.db)
        print(f"no state database at {args.db}{elsewhere or ' (pass --db)'}", file=sys.stderr)
        return 2
    try:
        store = StateStore(args.db, read_only=True)
        if args.verb == "list":
            tasks = store.tasks()
            if tasks:
                print("\n".join(tasks))
            return 0
        record = store.dump(args.task_id)
    except KeyError:
        print(f"no state for task {args.task_id!r} in {args.db}{_held_elsewhere(args.db, args.task_id)}", file=sys.stderr)
        return 1
    except StateDatabaseError as exc:
        advice = "restore it from a copy, or start a new one by moving it away" if exc.damaged else "pass --db <lake>/state/states.db"
        print(f"{exc}; {advice}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:  # a directory, a database of other tables
        print(f"{args.db} is not a state database ({exc}); pass --db <lake>/state/states.db", file=sys.stderr)
        return 2
    print(render(State.model_validate(record["state"])) if args.render else json.dumps(record, indent=2, ensure_ascii=False))
    return 0


TEACHER_DB = "teacher_states.db"
"""The teacher SRL loop's states, beside the actors' in `<lake>/state/` (pipelines/teacher_worker.py)."""


def _other_database(db: Path) -> str:
    """A hint naming the lake's other state database (a teacher run's lake has only `teacher_states.db`), where there is one."""
    other = db.with_name("states.db" if db.name == TEACHER_DB else TEACHER_DB)
    return f"; the lake's other state database is there: pass --db {other}" if other != db and other.is_file() else ""


def _held_elsewhere(db: Path, task_id: str) -> str:
    """A hint where the lake's other state database (the teacher's, or the actors' from the teacher's) has the task."""
    other = db.with_name("states.db" if db.name == TEACHER_DB else TEACHER_DB)
    try:
        if other == db or not other.is_file():
            return ""
        StateStore(other, read_only=True).dump(task_id)
    except (KeyError, sqlite3.Error):
        return ""
    whose = "the generation actors'" if other.name == "states.db" else "the teacher's"
    return f"; {whose} states have it: pass --db {other}"


if __name__ == "__main__":
    raise SystemExit(main())
