"""Student rollouts: the generation actors of configs/actors.yaml run the actor loop over refactoring tasks.

    trajforge rollout [--lake ./lake] [--tasks FILE] [--limit N] [--set actors.engine=vllm]
    trajforge rollout --queue NAME [--idle-exit-s 60]     # tasks as producers put them into a named Ray queue
    ray job submit --working-dir . -- python -m actors.rollout --lake /shared/lake

Starts `actors.count` GenerationActors (one per GPU in production, placed through configs/cluster.yaml),
runs every task to its end in one actor (its turns share that actor's prefix cache), with the
supervisor restarting an actor that hangs, and appends one step record per step to
`<lake>/raw/trajectories/`, which the next build turns into rows. Tasks come from the synthetic tasks
file of the lake (`trajforge synth-rules`), another JSON-lines file of tasks, or a named Ray queue
(`actors/task_queue.py`), which needs a running cluster. An engine whose extra is not installed (vllm without
`.[gpu]`) is refused before any actor starts. Prints one line per task and the verified share per language.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

from actors.settings import ActorSettings, absolute_actor_settings, load_actor_settings
from actors.task_queue import LEASE_S
from trajforge.cli.common import non_negative_seconds, nonblank_path, positive_int, positive_seconds
from trajforge.cluster import init_ray
from trajforge.errors import ConfigError
from trajforge.settings import parse_assignment


NO_TASKS_HINT = "run `trajforge synth-rules --lake LAKE` first, or pass --tasks FILE (JSON lines) or --queue NAME"


def read_tasks(path: Path, limit: int | None = None, hint: str = NO_TASKS_HINT) -> list[dict[str, Any]]:
    """The tasks of a JSON-lines file, each one the actor loop can run (a task_id, an instruction, files or pre),
    all checked before any runs; a ConfigError names the first line that is not one, or an empty file."""
    from pydantic import ValidationError

    from actors.loop import LoopTask, task_problems

    if not path.is_file():
        raise ConfigError(f"no tasks at {path}" + (f": {hint}" if hint else ""))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}): give a file of JSON lines, one task a line") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror or exc}): check its permissions") from None
    tasks = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            task = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{path} line {number} is not JSON: {exc}") from None
        if not isinstance(task, dict) or not task.get("task_id"):
            raise ConfigError(f"{path} line {number} is not a task object with a task_id")
        try:
            LoopTask.model_validate(task)
        except ValidationError as exc:
            raise ConfigError(f"{path} line {number} is not a task the actor loop can run: {task_problems(exc)}") from None
        tasks.append(task)
    if not tasks:
        raise ConfigError(f"no tasks in {path}: the file has no task lines")
    return tasks[:limit] if limit else tasks


def rollout(settings: ActorSettings, tasks: list[dict[str, Any]] | None = None, queue: str | None = None, idle_exit_s: float = 60.0,
            progress: bool = True, lease_s: float = LEASE_S) -> list[dict[str, Any]]:
    """Run the loop over `tasks`, or over what arrives in the named queue until it stays empty; the task summaries,
    each with its task's `language`. A queue's batch is acknowledged once its tasks have ended, and released
    back to the queue if the rollout fails while running it."""
    import ray
    from tqdm import tqdm

    from actors.actor import start_actors
    from actors.run import run_loop
    from actors.task_queue import connect_cluster, leased_batches, task_queue

    if queue is not None:
        connect_cluster()  # a queue lives only in a running cluster: never a Ray of this process alone
    else:
        init_ray()
    actors = start_actors(settings)
    summaries: list[dict[str, Any]] = []
    waves = (wave for wave in [tasks]) if tasks is not None else \
        leased_batches(task_queue(queue), size=4 * len(actors), idle_exit_s=idle_exit_s, lease_s=lease_s)
    try:
        with tqdm(total=len(tasks) if tasks is not None else None, desc="rollout tasks", unit="task", disable=not progress) as bar, \
                closing(waves):
            for wave in waves:
                ran = run_loop(actors, wave, task_timeout_s=settings.loop.task_timeout_s, progress=bar,
                               health_interval_s=settings.health_interval_s)
                summaries += [{**summary, "language": str(task.get("language", "?"))} for summary, task in zip(ran, wave)]
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
    return summaries


def report(summaries: list[dict[str, Any]], lake: Path) -> str:
    lines = [f"{'task':<44} {'language':<11} {'steps':>5}  verified  problem"]
    per_language: dict[str, Counter] = {}
    for summary in summaries:
        language = summary.get("language", "?")
        counts = per_language.setdefault(language, Counter())
        counts["tasks"] += 1
        counts["verified"] += bool(summary.get("verified"))
        problem = " ".join((summary.get("errors") or [""])[-1].split())[:60]  # one table row, whatever the error's lines
        lines.append(f"{str(summary.get('task_id'))[:44]:<44} {language:<11} {summary.get('steps', 0):>5}  {str(bool(summary.get('verified'))):<8}  {problem}")
    lines.append("")
    for language, counts in sorted(per_language.items()):
        lines.append(f"{language}: {counts['verified']} of {counts['tasks']} verified")
    verified = sum(bool(summary.get("verified")) for summary in summaries)
    lines.append(f"{verified} of {len(summaries)} tasks verified; step records in {lake / 'raw' / 'trajectories'}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="actors config (default configs/actors.yaml)")
    parser.add_argument("--lake", type=nonblank_path, default=None, help="where step records go and synthetic tasks are read (actors.lake; default ./lake)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tasks", type=Path, default=None, help="JSON lines of tasks (default <lake>/raw/tasks/synth_rules/tasks.jsonl)")
    source.add_argument("--queue", default=None, metavar="NAME", help="take tasks from the named Ray queue (actors.task_queue) as they arrive; it lives in the "
                             "running Ray cluster (`ray start --head`, or RAY_ADDRESS)")
    parser.add_argument("--limit", type=positive_int, default=None, help="only the first N tasks of the file (not with --queue)")
    parser.add_argument("--idle-exit-s", type=non_negative_seconds, default=60.0,
                        help="with --queue: stop once no task has been waiting or out on lease this long (default 60)")
    parser.add_argument("--lease-s", type=positive_seconds, default=LEASE_S,
                        help=f"with --queue: a batch this rollout took goes back to the queue this long after the rollout stops "
                             f"renewing it, if it was killed (default {LEASE_S:g})")
    parser.add_argument("--json", action="store_true", help="print the task summaries as JSON instead of a table")


def config_roots(args: argparse.Namespace) -> tuple[str, ...]:
    """The sections `--set` may name: the actors' (engine, model, count, loop, sandbox workers) and the sandbox's (the
    actors' jail policy, configs/sandbox.yaml)."""
    return ("actors", "sandbox")


def run_command(args: argparse.Namespace) -> int:
    from actors.engines.factory import check_engine_installed
    from actors.prompting import load_prompts
    from actors.task_queue import connect_cluster
    from trajforge.cluster import ray_to_join
    from trajforge.lake import Lake, refuse_a_file
    from trajforge.settings.job_paths import absolute_data_paths

    assignments = [parse_assignment(text) for text in getattr(args, "assignments", [])]
    if args.lake is not None:
        assignments.append(("actors.lake", str(args.lake)))
    if args.queue and args.limit is not None:
        raise ConfigError("--limit takes the first N tasks of a file; a --queue rollout takes what arrives until --idle-exit-s")
    for _, path in absolute_data_paths({"--tasks": args.tasks}, "--tasks /shared/tasks.jsonl"):
        args.tasks = Path(path)
    settings = absolute_actor_settings(load_actor_settings(args.config, assignments), make_model=False, sandbox_assignments=assignments)
    refuse_a_file(Path(settings.lake), "actors.lake (--lake)", "the lake the step records go to")
    try:
        load_prompts(settings.prompts)  # a bad prompts file is refused here, not by every actor as it starts
    except ConfigError as exc:
        raise ConfigError(f"actors.prompts: {exc}") from None
    tasks = None if args.queue else read_tasks(args.tasks or Lake(settings.lake).synthetic_tasks, args.limit)
    # both refused before the embedded model is made and any actor starts; a cluster's GPU nodes may have what this one lacks
    check_engine_installed(settings.engine, joins_cluster=bool(args.queue) or ray_to_join(None) is not None)
    if args.queue:
        connect_cluster()
    settings = absolute_actor_settings(settings)  # the embedded model made here, once the tasks are known to be there
    summaries = rollout(settings, tasks, queue=args.queue, idle_exit_s=args.idle_exit_s, lease_s=args.lease_s)
    if args.json:
        print(json.dumps(summaries, indent=2, default=str))
    else:
        print(report(summaries, settings.lake))
    return 0


def main(argv: list[str] | None = None) -> int:
    from trajforge.cli.common import module_main

    return module_main("actors.rollout", __doc__, add_arguments, config_roots, run_command, argv)

if __name__ == "__main__":
    raise SystemExit(main())
