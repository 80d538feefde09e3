"""Where the teacher's tasks come from (seed 002 section 8.2 step 1: "Sample tasks from processed datasets").

`teacher.tasks` is null (the synthetic ast-grep tasks of the lake, as before), one JSON-lines file (as before), or a
list of sources, each with a weight:

    tasks:
      - {source: synth_rules, weight: 1}                      # <lake>/raw/tasks/synth_rules/tasks.jsonl
      - {source: processed, splits: [train], languages: [python, java], weight: 2, balance_languages: true}
      - {path: /data/more-tasks.jsonl, weight: 1, name: mine}  # any tasks file

`processed` reads `<lake>/processed/datasets/<language>/<split>.jsonl` (`trajforge datasets` writes them; `languages`
are its output folders, default all of them). A task id that an earlier source already gave is left out of later
ones, so it is counted (and run) once. With `teacher.sample` N the N tasks are shared out by weight (a source with
fewer tasks than its share gives all it has, the rest goes to the others), within a source evenly per language
when `balance_languages` is set, each share drawn with `teacher.seed`: the same config samples the same tasks. A
single source drawn without balance takes what the loop took before this module (`random.Random(seed).sample`).

The processed **test** split is held out (the build keeps loop runs of its tasks out of training,
pipelines/build/held_out.py): the teacher samples it only with `teacher.evaluate: true`; without it a source asking
for it, or a file holding one of its tasks, is refused naming the field.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from trajforge.errors import ConfigError, TrajforgeError

SPLITS = ("train", "dev", "test")
HELD_OUT_SPLIT = "test"
SOURCE_KEY = "task_source"
"""The key each sampled task carries: the label of the source it came from (the report's per-source table)."""
EVALUATE_HINT = ("set teacher.evaluate=true to run the teacher on held-out tasks as an evaluation (the build keeps "
                 "those runs out of training: their sft rows are split test)")


class TasksMissing(TrajforgeError, FileNotFoundError):
    """The tasks the teacher samples from are not there (`trajforge synth-rules` or `trajforge datasets` writes them)."""


class TaskSource(BaseModel):
    """One entry of `teacher.tasks`: `source: synth_rules`, `source: processed` (with `splits`, `languages`), or a
    `path` to a JSON-lines tasks file (`source: file`, which a `path` implies)."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["synth_rules", "processed", "file"]
    path: Path | None = None
    splits: list[Literal["train", "dev", "test"]] | None = None
    """processed: the splits to read (default [train]); test only with teacher.evaluate."""
    languages: list[str] | None = None
    """processed: the output folders to read (python, javascript, java by configs/datasets.yaml); default every one."""
    weight: float = Field(default=1.0, gt=0)
    balance_languages: bool = False
    """Share this source's part of the sample evenly over its tasks' languages (a language with too few gives all it has)."""
    name: str | None = Field(default=None, min_length=1)
    """Its label in the report; default synth_rules, processed:<splits>, file:<folder>/<file>."""

    @model_validator(mode="before")
    @classmethod
    def _file_by_path(cls, data: Any) -> Any:
        if isinstance(data, dict) and "source" not in data and "path" in data:
            return {**data, "source": "file"}
        return data

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> TaskSource:
        if (self.source == "file") != (self.path is not None):
            raise ValueError("a file source needs its `path`" if self.source == "file" else f"`path` is for a file source, not {self.source}")
        if self.source != "processed" and (self.splits is not None or self.languages is not None):
            raise ValueError("`splits` and `languages` are for `source: processed`")
        if self.splits == [] or self.languages == []:
            raise ValueError("an empty list names nothing: leave it out for the default")
        if self.source == "processed" and self.splits is None:
            self.splits = ["train"]
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.source == "processed":
            return "processed:" + "+".join(self.splits or ())
        if self.source == "file":
            return f"file:{self.path.parent.name}/{self.path.name}" if self.path.parent.name else f"file:{self.path.name}"
        return self.source


TasksSetting = Annotated[Union[Annotated[Path, Tag("file")], Annotated[list[TaskSource], Tag("sources")]],
                         Discriminator(lambda value: "sources" if isinstance(value, list) else "file")] | None
"""`teacher.tasks`: null, one file, or a list of sources (an error in one names it: teacher.tasks.sources.1.weight)."""


def held_out_split_field(tasks: TasksSetting) -> str | None:
    """The field of the first source asking for the processed test split (`teacher.tasks[1].splits`), or None."""
    for index, source in enumerate(tasks if isinstance(tasks, list) else []):
        if HELD_OUT_SPLIT in (source.splits or ()):
            return f"teacher.tasks[{index}].splits"
    return None


def sources_of(tasks: TasksSetting) -> list[tuple[str, TaskSource]]:
    """(field, source) of each source: null is the synthetic tasks, a path one file, as before the list existed."""
    if tasks is None:
        return [("teacher.tasks", TaskSource(source="synth_rules"))]
    if isinstance(tasks, Path):
        return [("teacher.tasks", TaskSource(source="file", path=tasks))]
    return [(f"teacher.tasks[{index}]", source) for index, source in enumerate(tasks)]


def read_source(field: str, source: TaskSource, lake: Path, legacy: bool = False) -> list[dict[str, Any]]:
    """The tasks of one source, each checked as the actor loop takes it (`read_tasks`); TasksMissing says what to run
    when its files are not there. `legacy`: the source is the whole setting (null or one path), whose messages stay."""
    from actors.rollout import read_tasks

    if source.source == "processed":
        return _read_processed(field, source, lake)
    path = source.path if source.source == "file" else _synthetic_tasks(lake)
    if not path.is_file():
        if legacy and source.source == "synth_rules":
            raise TasksMissing(f"no tasks at {path} (teacher.tasks follows teacher.lake={lake}): "
                               f"run `trajforge synth-rules --lake {lake}` first, or set teacher.tasks to a tasks file")
        if legacy:
            raise TasksMissing(f"no tasks at {path} (teacher.tasks): run `trajforge synth-rules --lake LAKE` first, which writes "
                               "LAKE/raw/tasks/synth_rules/tasks.jsonl, and point teacher.tasks there (or leave it null)")
        if source.source == "synth_rules":
            raise TasksMissing(f"no tasks at {path} ({field}, the synthetic tasks of teacher.lake={lake}): "
                               f"run `trajforge synth-rules --lake {lake}` first")
        raise TasksMissing(f"no tasks at {path} ({field}.path): check the path")
    return read_tasks(path, hint="")


def _synthetic_tasks(lake: Path) -> Path:
    from pipelines.synth_rules import tasks_file

    return tasks_file(lake)


def _read_processed(field: str, source: TaskSource, lake: Path) -> list[dict[str, Any]]:
    from actors.rollout import read_tasks
    from trajforge.lake import Lake

    folder = Lake(lake).processed_datasets
    if not folder.is_dir() or not any(path.is_dir() for path in folder.iterdir()):
        raise TasksMissing(f"no processed datasets at {folder} ({field}): run `trajforge datasets --lake {lake}` first "
                           "(its process stage, `trajforge datasets --stage process`, writes <language>/<split>.jsonl there)")
    present = sorted(path.name for path in folder.iterdir() if path.is_dir())
    languages = source.languages or present
    unknown = [language for language in languages if language not in present]
    if unknown:
        raise ConfigError(f"{field}.languages: no processed folder for {', '.join(unknown)} in {folder}; "
                          f"it has {', '.join(present)} (the output folders of datasets.languages)")
    tasks: list[dict[str, Any]] = []
    for language in languages:
        for split in source.splits or ():
            path = folder / language / f"{split}.jsonl"
            if path.is_file() and path.read_bytes().strip():  # a split the datasets left empty is written empty
                tasks += read_tasks(path, hint="")
    if not tasks:
        raise TasksMissing(f"no tasks in the processed {'/'.join(source.splits or ())} splits of {', '.join(languages)} "
                           f"under {folder} ({field}): run `trajforge datasets --lake {lake}` with datasets that have such records")
    return tasks


def refuse_held_out(pools: list[tuple[str, TaskSource, list[dict[str, Any]]]], lake: Path) -> None:
    """ConfigError naming the first source (other than one asking for the test split, which the settings refuse) that
    holds a task of a processed test split: a file of them, or tasks copied from one."""
    from pipelines.build.held_out import read_held_out
    from trajforge.lake import Lake

    held = read_held_out(Lake(lake)).task_ids
    if not held:
        return
    for field, source, tasks in pools:
        found = [task["task_id"] for task in tasks if task["task_id"] in held]
        if found:
            where = f"{field}.path" if source.source == "file" and field != "teacher.tasks" else field
            raise ConfigError(f"{where}: {len(found)} of its {len(tasks)} tasks are in a processed test split "
                              f"({Lake(lake).processed_datasets}/*/test.jsonl), e.g. {found[0]}, held out from the teacher; "
                              + EVALUATE_HINT)


def allocate(total: int, weights: list[float], capacities: list[int]) -> list[int]:
    """`total` shared out by `weights` (largest remainders, ties to the earlier), none above its capacity: a share
    over its capacity is capped and the rest shared again among the others. Deterministic."""
    counts = [0] * len(weights)
    open_ = [index for index, capacity in enumerate(capacities) if capacity > 0]
    left = min(total, sum(capacities))
    while left > 0 and open_:
        whole = sum(weights[index] for index in open_)
        shares = {index: left * weights[index] / whole for index in open_}
        capped = [index for index in open_ if shares[index] >= capacities[index] - counts[index]]
        if capped:  # these give all they have; the others share what is left in the next round
            for index in capped:
                left -= capacities[index] - counts[index]
                counts[index] = capacities[index]
            open_ = [index for index in open_ if index not in capped]
            continue
        floors = {index: math.floor(share) for index, share in shares.items()}
        extra = left - sum(floors.values())
        for index in sorted(open_, key=lambda index: (-(shares[index] - floors[index]), index))[:extra]:
            floors[index] += 1
        for index, count in floors.items():
            counts[index] += count
        left = 0
    return counts


def draw(tasks: list[dict[str, Any]], count: int, seed: int, balance_languages: bool) -> list[dict[str, Any]]:
    """`count` of `tasks`, drawn with `seed` (evenly per language when `balance_languages`)."""
    if count >= len(tasks):
        return list(tasks)
    if not balance_languages:
        return random.Random(seed).sample(tasks, count)
    by_language: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for task in tasks:
        by_language[str(task.get("language", "python"))].append(task)
    languages = sorted(by_language)
    counts = allocate(count, [1.0] * len(languages), [len(by_language[language]) for language in languages])
    return [task for language, share in zip(languages, counts) for task in random.Random(f"{seed}:{language}").sample(by_language[language], share)]


def sample_tasks(tasks: TasksSetting, lake: Path, sample: int, seed: int, evaluate: bool = False) -> list[dict[str, Any]]:
    """The tasks of one teacher run: every task of every source (sample 0), else `sample` of them shared out by weight,
    sorted by task id; each task carries its source's label under `task_source`, and a task id is taken once (from the
    first source that has it). Refuses processed test tasks unless `evaluate`."""
    sources = sources_of(tasks)
    legacy = not isinstance(tasks, list)
    pools, seen = [], set()
    for field, source in sources:
        found = read_source(field, source, lake, legacy=legacy)
        fresh = []
        for task in found:
            if task["task_id"] not in seen:
                seen.add(task["task_id"])
                fresh.append(task)
        pools.append((field, source, fresh))
    if not evaluate:
        refuse_held_out(pools, lake)
    labels = _unique_labels([source for _, source, _ in pools])
    if not sample or sample >= len(seen):
        return [{**task, SOURCE_KEY: label} for (_, _, pool), label in zip(pools, labels) for task in pool]
    counts = allocate(sample, [source.weight for _, source, _ in pools], [len(pool) for _, _, pool in pools])
    chosen = [{**task, SOURCE_KEY: label} for (_, source, pool), label, count in zip(pools, labels, counts)
              for task in draw(pool, count, seed, source.balance_languages)]
    return sorted(chosen, key=lambda task: task["task_id"])


def _unique_labels(sources: list[TaskSource]) -> list[str]:
    labels = [source.label for source in sources]
    return [label if labels.count(label) == 1 else f"{label}#{index}" for index, label in enumerate(labels)]
