"""The teacher SRL loop (specification section 8) as a Ray job.

    trajforge teacher [--config configs/teacher.yaml] [--lake ./lake] [--set teacher.sample=100] [--set sandbox.wall_time_s=10]
    ray job submit --working-dir . -- python -m pipelines.teacher_srl --config configs/teacher.yaml

Samples tasks (`teacher.tasks`, pipelines/task_sources.py: the synthetic tasks of `trajforge synth-rules`, the
processed datasets' train/dev splits of `trajforge datasets`, tasks files, by weight), and for each runs up to
`max_steps` steps on a TeacherWorker actor: the prompt from `configs/teacher_prompts.yaml` (system, `<state>`, instruction +
code + the sandbox's feedback), the teacher's `<think>/<action>/<state_update>`, the action verified in
the sandbox, rewards (verified, matches the gold result, tests pass). Each step goes to
`lake/raw/trajectories/` with the teacher, model, temperature and seed, the job's `job_id` and the run's
`run_id` (one per run of a task: a task Ray re-runs on a restarted worker is a new run). A task with a run
whose last step is recorded (`final`) and answered is finished: a restarted job skips it, so a crash or
`ray job stop` loses at most the tasks in flight. Ends with `reports/teacher/metrics.md` (by language and by source).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from pipelines.synth_rules import tasks_file
from pipelines.task_sources import EVALUATE_HINT, SOURCE_KEY, TaskSource, TasksSetting, held_out_split_field, sample_tasks
from pipelines.task_sources import TasksMissing  # noqa: F401 (where callers and tests import it from)
from trajforge.atomic import write_atomic
from trajforge.cluster import init_ray
from trajforge.errors import ConfigError
from trajforge.settings import load_section, parse_assignment
from trajforge.trajectories import good_step

if TYPE_CHECKING:
    from sandbox.settings import SandboxSettings

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT / "configs" / "teacher.yaml"


class TeacherSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["oracle", "openai"] = "oracle"
    model: str = "oracle"
    base_url: str | None = Field(default=None, validate_default=True)
    """The OpenAI-compatible endpoint; required with kind openai."""
    api_key_env: str | None = "TEACHER_API_KEY"
    mistake_rate: float = Field(default=0.25, ge=0, le=1)
    temperature: float = Field(default=0.7, ge=0)
    seed: int = 0
    workers: int = Field(default=2, ge=1)
    requests_per_second: float = Field(default=4.0, gt=0)
    timeout_s: float = Field(default=120.0, gt=0)
    """openai: how long one request to the teacher may take; a hung endpoint fails the attempt after it."""
    max_retries: int = Field(default=4, ge=0)
    """openai: retries of a request that timed out, could not connect or got a 429/5xx, with exponential backoff."""
    backoff_s: float = Field(default=0.5, ge=0)
    """openai: the first retry's wait, doubled for each later one."""
    evaluate: bool = False
    """An evaluation run: the processed datasets' held-out test split may be sampled (refused otherwise). The build
    keeps the runs of those tasks out of training (pipelines/build/held_out.py)."""
    tasks: TasksSetting = None
    """The tasks to sample: null, where `trajforge synth-rules --lake <lake>` writes them (`tasks_file`); a JSON-lines
    file; or a list of sources with weights (`pipelines.task_sources.TaskSource`: synth_rules, processed, a path)."""
    sample: int = Field(default=0, ge=0)
    """Tasks per run, sampled with `seed` and shared out over the sources of `tasks` by weight; 0: every task (the
    synthetic set's ~590, so that the report of the plain `ray job submit ... --config configs/teacher.yaml` shows the
    200 verified steps the specification asks for)."""
    max_steps: int = Field(default=3, ge=1)
    sandbox_timeout_s: float = Field(default=30.0, gt=0)
    """How long the loop waits for one sandbox run (an action or its tests) once a jail takes it, as
    `actors.loop.sandbox_timeout_s` does for the generation actors; the workers' jails end a run `JAIL_GRACE_S` past it
    (`loop_jail_settings`), so a `sandbox.wall_time_s` above it is cut. The default is the sandbox's own wall time."""
    lake: Path = Path("./lake")
    reports: Path = Path("reports/teacher")
    prompts: Path | None = None
    """configs/teacher_prompts.yaml (also when null); a relative path not found from the working directory is the project's."""
    cpus_per_worker: float = Field(default=0.5, ge=0)

    @field_validator("base_url")
    @classmethod
    def _endpoint_for_openai(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("kind") == "openai" and not value:
            raise ValueError("an openai teacher needs its endpoint, e.g. --set teacher.base_url=https://api.example.com")
        return value

    @field_validator("tasks")
    @classmethod
    def _test_split_only_to_evaluate(cls, value: Path | list[TaskSource] | None, info: ValidationInfo):
        field = held_out_split_field(value)
        if field and not info.data.get("evaluate"):
            raise ValueError(f"{field} asks for the processed test split, which is held out: train or dev for teaching; "
                             + EVALUATE_HINT)
        if isinstance(value, list) and not value:
            raise ValueError("an empty list names no tasks: leave teacher.tasks null for the synthetic tasks")
        return value

    @property
    def tasks_file(self) -> Path | None:
        """`tasks` when it is one file, `<lake>/raw/tasks/synth_rules/tasks.jsonl` when it is null (it follows `lake`);
        None for a list of sources."""
        if isinstance(self.tasks, list):
            return None
        return self.tasks if self.tasks is not None else tasks_file(self.lake)


def load_teacher_settings(path: str | Path | None = None, assignments=()) -> TeacherSettings:
    source = Path(path) if path else DEFAULT_CONFIG
    settings = load_section(TeacherSettings, source, "teacher", assignments)
    prompts = settings.prompts
    if prompts is not None and not prompts.is_absolute():  # absolute, for workers that run in another folder
        from trajforge.settings.job_paths import absolute_config_file

        shipped = not prompts.exists() and (PROJECT / prompts).is_file()  # the shipped configs/teacher_prompts.yaml
        settings = settings.model_copy(update={"prompts": PROJECT / prompts if shipped else absolute_config_file(prompts)})
    if settings.prompts is not None and not settings.prompts.is_file():
        raise ConfigError(f"teacher.prompts: no prompts file at {settings.prompts} (nor under {PROJECT}); "
                          f"leave it null for the shipped one or give the path of a YAML file like configs/teacher_prompts.yaml")
    if settings.prompts is None:  # the teacher's own templates, not the student's configs/prompts.yaml
        settings = settings.model_copy(update={"prompts": PROJECT / "configs" / "teacher_prompts.yaml"})
    from actors.prompting import load_prompts

    try:
        load_prompts(settings.prompts)  # checked here, not in every worker as it starts
    except ConfigError as exc:
        raise ConfigError(f"teacher.prompts: {exc}") from None
    return settings


def absolute_teacher_settings(settings: TeacherSettings) -> TeacherSettings:
    """The settings with relative `lake`, `tasks` and `reports` made absolute in the driver (`with_absolute_paths`): the
    workers run in a folder of their own (`ray start`'s, on a cluster), in a submitted job against the project checkout."""
    from trajforge.settings.job_paths import absolute_data_paths, with_absolute_paths

    example = "--lake /shared/lake --set teacher.reports=/shared/reports/teacher"
    if not isinstance(settings.tasks, list):
        return with_absolute_paths(settings, "teacher", ("lake", "tasks", "reports"), example)
    settings = with_absolute_paths(settings, "teacher", ("lake", "reports"), example)
    paths = {f"teacher.tasks[{index}].path": source.path for index, source in enumerate(settings.tasks)}
    absolute = dict(absolute_data_paths(paths, example))
    sources = [source.model_copy(update={"path": Path(absolute[field])}) if field in absolute else source
               for field, source in zip(paths, settings.tasks)]
    return settings.model_copy(update={"tasks": sources})


def teacher_name(settings: TeacherSettings) -> str:
    return settings.kind if settings.kind == "oracle" else settings.model


def load_tasks(settings: TeacherSettings) -> list[dict[str, Any]]:
    """The run's tasks (`sample_tasks`), each with its source's label under `task_source`; every line of every file an
    object with a task_id, or a ConfigError naming the first bad one; TasksMissing says what to run first."""
    return sample_tasks(settings.tasks, settings.lake, settings.sample, settings.seed, settings.evaluate)


def unanswered(record: dict[str, Any]) -> bool:
    """The teacher gave no answer at this step (its endpoint failed after the engine's retries): not its mistake."""
    return any(completion.get("finish_reason") == "error" for completion in record.get("completions") or [])


def teacher_records(settings: TeacherSettings, finished_only: bool = True) -> list[dict[str, Any]]:
    """This teacher's step records. A task interrupted (a job stopped, a worker restarted by Ray or the supervisor)
    and run again has records from both runs; `finished_only` keeps, per task, only the steps of the run that
    finished it (`finishing_runs`: no step twice)."""
    from trajforge.trajectories import read_trajectories

    root = settings.lake / "raw" / "trajectories"
    records = [r for r in read_trajectories(root) if r.get("teacher") == teacher_name(settings)] if root.is_dir() else []
    if not finished_only:
        return records
    finishing = finishing_runs(records)
    return [r for r in records if finishing.get(r["task_id"], _NO_RUN) == r.get("run_id")]


_NO_RUN = object()


def finishing_runs(records: list[dict[str, Any]]) -> dict[str, str | None]:
    """The run (`run_id`) that finished each finished task: the first whose last step is recorded and answered. A run
    whose last step the teacher did not answer did not finish its task (the next job retries it); one that has no last
    step was interrupted. The first, where Ray re-ran a task whose worker died after its last record was written."""
    finishing: dict[str, str | None] = {}
    for record in sorted(records, key=lambda record: record.get("created_at") or 0.0):
        if record.get("final") and not unanswered(record):
            finishing.setdefault(record["task_id"], record.get("run_id"))
    return finishing


def run(settings: TeacherSettings, progress: bool = True, sandbox: SandboxSettings | None = None) -> dict[str, Any]:
    """Run the loop; `settings` with absolute paths (`absolute_teacher_settings`); `sandbox`: the workers' jail policy
    (default: configs/sandbox.yaml as loaded here, its folders absolute)."""
    import ray
    from tqdm import tqdm

    from actors.run import run_loop
    from pipelines.teacher_worker import start_teacher_workers
    from sandbox.settings import absolute_sandbox_settings
    from trajforge.cluster import warn_if_cpus_taken

    sandbox = sandbox or absolute_sandbox_settings()

    tasks = load_tasks(settings)
    import uuid

    finished = set(finishing_runs(teacher_records(settings, finished_only=False)))
    job_id = uuid.uuid4().hex[:12]
    todo = [task for task in tasks if task["task_id"] not in finished]
    init_ray()
    started = time.monotonic()
    summaries: list[dict[str, Any]] = []
    if todo:
        warn_if_cpus_taken(settings.cpus_per_worker, "teacher.cpus_per_worker", "the teacher workers")
        workers = start_teacher_workers(settings, job_id, sandbox)
        with tqdm(total=len(todo), desc="teacher tasks", unit="task", disable=not progress) as bar:
            summaries = run_loop(workers, todo, progress=bar, concurrency_per_actor=2)
        stats = [ray.get(w.stats.remote()) for w in workers]
        for w in workers:
            ray.kill(w)
    else:
        stats = []
    recorded = teacher_records(settings, finished_only=False)
    finished = set(finishing_runs(recorded))
    failed = sorted({r["task_id"] for r in recorded if r.get("job_id") == job_id and r.get("final") and unanswered(r)} - finished)
    report = write_report(settings, tasks, stats, time.monotonic() - started, failed)
    return {"tasks": len(tasks), "skipped_finished": len(tasks) - len(todo), "ran": len(summaries),
            "verified": sum(bool(s.get("verified")) for s in summaries), "unanswered": len(failed), "report": str(report)}


def write_report(settings: TeacherSettings, tasks: list[dict[str, Any]], stats: list[dict[str, int]], wall_s: float,
                 failed: Sequence[str] = ()) -> Path:
    """reports/teacher/metrics.md from this teacher's finished tasks among the sampled ones, each counted by the steps of
    the run that finished it (`finishing_runs`): verified / total (the specification's teacher precision) per task and
    per step, and precision: the share of the steps the teacher answered that earned all three rewards (`good_step`:
    applied, equal to the known result, tests pass), the figure a deliberate mistake lowers even when its action
    applies. The steps of interrupted runs (a worker restarted mid-task, a stopped job) are named apart and not counted,
    so a step a re-run took again counts once; `failed`: tasks this job's teacher left unanswered."""
    wanted = {task["task_id"]: task for task in tasks}
    recorded = [r for r in teacher_records(settings, finished_only=False) if r["task_id"] in wanted]
    finishing = finishing_runs(recorded)
    records = [r for r in recorded if finishing.get(r["task_id"], _NO_RUN) == r.get("run_id")]
    ended_runs = {(r["task_id"], r.get("run_id")) for r in recorded if r.get("final")}
    interrupted = Counter((r["task_id"], r.get("run_id")) for r in recorded if (r["task_id"], r.get("run_id")) not in ended_runs)
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_task[record["task_id"]].append(record)
    per_language: dict[str, Counter] = defaultdict(Counter)
    per_source: dict[str, Counter] = defaultdict(Counter)
    rewards: Counter = Counter()
    for task_id, steps in by_task.items():
        verified = any(s["reward"]["verified"] for s in steps)
        gold = any(s["reward"].get("matches_gold") for s in steps)
        answered = [s for s in steps if not unanswered(s)]
        counts = dict(tasks=1, verified=int(verified), matches_gold=int(gold), steps=len(answered),
                      verified_steps=sum(bool(s["reward"]["verified"]) for s in answered), good_steps=sum(good_step(s) for s in answered))
        per_language[str(wanted[task_id].get("language", "python"))].update(counts)
        per_source[str(wanted[task_id].get(SOURCE_KEY, "?"))].update(counts)
        if len(answered) < len(steps):
            rewards["no answer (teacher endpoint error)"] += len(steps) - len(answered)
        for step in answered:
            rewards["verified" if step["reward"]["verified"] else "not verified"] += 1
            rewards[GOLD_OUTCOMES[step["reward"].get("matches_gold")]] += 1
            if step["model_output"].get("errors"):
                rewards["malformed output"] += 1
    tokens = Counter()
    for item in stats:
        tokens.update({key: value for key, value in item.items() if key.endswith("_tokens")})
    lines = [f"# Teacher SRL run: {teacher_name(settings)}", "",
             f"- teacher: `{teacher_name(settings)}` ({settings.kind}), temperature {settings.temperature}, seed {settings.seed}"
             + (f", mistake rate {settings.mistake_rate}" if settings.kind == "oracle" else ""),
             f"- tasks: {len(by_task)} of {len(tasks)} sampled are finished; {len(records)} steps in the runs that finished them; "
             f"this job took {wall_s:.1f} s",
             f"- cost: {tokens['prompt_tokens']} prompt tokens, {tokens['completion_tokens']} completion tokens (this job)",
             *([f"- evaluation run (teacher.evaluate): the processed test splits may be among the tasks; the build keeps "
                "their runs out of training"] if settings.evaluate else []),
             *([f"- interrupted runs: {len(interrupted)} ({interrupted.total()} steps; a worker restarted mid-task, a stopped job): "
                "kept in the lake, not counted here"] if interrupted else []),
             *([f"- **the teacher did not answer {len(failed)} tasks** (endpoint errors): not finished, the next run retries them: "
                + ", ".join(failed[:10]) + (" ..." if len(failed) > 10 else "")] if failed else []),
             "", "A task is verified when one of its steps is (its action applied cleanly). Precision is per step: the steps that"
             " earned every reward (applied, equal to the gold result, tests pass where known) / the steps the teacher answered."
             " The gold result is the task's `post` (a synthetic task's, or a processed dataset record's).", "",
             *_breakdown("language", per_language), "", *_breakdown("source", per_source)]
    lines += ["", "| per model | tasks | verified/total | steps | precision |", "| --- | --- | --- | --- | --- |"]
    models = Counter(steps[0]["model"] for steps in by_task.values())
    for model, count in sorted(models.items()):
        verified = sum(any(s["reward"]["verified"] for s in steps) for steps in by_task.values() if steps[0]["model"] == model)
        answered = [s for steps in by_task.values() if steps[0]["model"] == model for s in steps if not unanswered(s)]
        precision = _share(sum(good_step(s) for s in answered), len(answered))
        lines.append(f"| {model} | {count} | {verified / count:.2f} | {len(answered)} | {precision} |")
    lines += ["", "## Reward distribution (per step)", "", *(f"- {name}: {count}" for name, count in sorted(rewards.items())), ""]
    settings.reports.mkdir(parents=True, exist_ok=True)
    path = settings.reports / "metrics.md"
    write_atomic(path, "\n".join(lines))  # a kill midway leaves the previous report
    return path


GOLD_OUTCOMES = {True: "matches gold", False: "differs from gold", None: "not compared with gold (no action applied, or no known result)"}


def _breakdown(name: str, groups: dict[str, Counter]) -> list[str]:
    """The report's table of tasks and steps per `name` (language, source)."""
    lines = [f"| {name} | tasks | verified | verified/total | matches gold | steps | verified steps | correct steps | precision |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, counts in sorted(groups.items()):
        lines.append(f"| {key} | {counts['tasks']} | {counts['verified']} | {counts['verified'] / counts['tasks']:.2f} | "
                     f"{counts['matches_gold']} | {counts['steps']} | {counts['verified_steps']} | {counts['good_steps']} | "
                     f"{_share(counts['good_steps'], counts['steps'])} |")
    return lines


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.2f}" if whole else "-"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from trajforge.cli.common import nonblank_path

    parser.add_argument("--config", type=Path, default=None, help="teacher config (default configs/teacher.yaml)")
    parser.add_argument("--lake", type=nonblank_path, default=None,
                        help="the lake to read tasks from (unless teacher.tasks names a file) and write trajectories to (teacher.lake; default ./lake)")


def config_roots(args: argparse.Namespace) -> tuple[str, ...]:
    """The sections `--set` may name: the teacher's, and the sandbox's (the workers' jail policy)."""
    return ("teacher", "sandbox")


def run_command(args: argparse.Namespace) -> int:
    from sandbox.settings import absolute_sandbox_settings
    from trajforge.lake import refuse_a_file

    assignments = [parse_assignment(text) for text in getattr(args, "assignments", [])]
    if args.lake is not None:
        assignments.append(("teacher.lake", str(args.lake)))
    settings = absolute_teacher_settings(load_teacher_settings(args.config, assignments))
    refuse_a_file(Path(settings.lake), "teacher.lake (--lake)", "the lake the trajectories go to")
    sandbox = absolute_sandbox_settings(None, assignments)
    try:
        result = run(settings, sandbox=sandbox)
    except KeyboardInterrupt:
        print(f"trajforge teacher: interrupted; {interrupted_state(settings)}", file=sys.stderr)
        raise
    print(json.dumps(result, indent=2))
    print(Path(result["report"]).read_text(encoding="utf-8"))
    if result["unanswered"]:
        print(f"trajforge teacher: the teacher ({settings.base_url or settings.kind}) did not answer {result['unanswered']} tasks; "
              "they are not counted as finished: check the endpoint and run the job again to retry them", file=sys.stderr)
        return 1
    return 0


def interrupted_state(settings: TeacherSettings) -> str:
    """What an interrupted job keeps (its finished tasks' steps) and how to go on."""
    wanted = {task["task_id"] for task in load_tasks(settings)}
    done = wanted & set(finishing_runs(teacher_records(settings, finished_only=False)))
    return (f"{len(done)} of {len(wanted)} tasks are finished, their steps kept in {settings.lake / 'raw' / 'trajectories'}; "
            "the same command goes on with the others (finished tasks are skipped, an interrupted one starts over)")


def main(argv: list[str] | None = None) -> int:
    from trajforge.cli.common import module_main

    return module_main("pipelines.teacher_srl", __doc__, add_arguments, config_roots, run_command, argv)

if __name__ == "__main__":
    raise SystemExit(main())
