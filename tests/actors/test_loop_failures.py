"""The actor loop's failure isolation without Ray or a model: a stand-in engine answers, the real sandbox, state
store and trajectory writer record. Each task that cannot run fails alone, with its reason, and never raises."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from actors.engines.types import Completion
from actors.loop import LoopOptions, generate_step, run_task
from actors.prompting import load_prompts
from actors.state import StateStore
from sandbox.pool import SandboxPool
from sandbox.settings import SandboxSettings
from trajforge.trajectories import TrajectoryWriter, read_trajectories

TASK = {"task_id": "t1", "instruction": "Replace print with logging.info", "files": {"app.py": "import logging\nprint('x')\n"}}
NO_ACTION = "<think>not sure yet</think>"  # malformed (no <action>): the sandbox is not called


class _Engine:
    name, model, tokenizer = "stand-in", "stand-in-model", None

    def __init__(self, answers: list[Completion]):
        self.answers = answers

    def generate(self, requests):
        return [self.answers.pop(0) for _ in requests]


class _Actor:
    """What run_task uses of a GenerationActor."""

    index = 0

    def __init__(self, root: Path, answers: list[Completion], states: StateStore | None = None):
        self.engine = _Engine(answers)
        self.sandbox = SandboxPool(workers=1, settings=SandboxSettings(workspaces_root=root / "ws", logs_dir=root / "logs"))
        self.states = states or StateStore(root / "states.db")
        self.trajectories = TrajectoryWriter(root / "trajectories", "actor0")
        self.templates = load_prompts()

    def count(self, name: str) -> None:
        pass

    def timed_generate(self, requests):
        return self.engine.generate(requests)

    def propose(self, messages, options, seed, task):
        return generate_step(self, messages, options, seed)


def _answer(text: str, finish_reason: str = "stop") -> Completion:
    return Completion(text=text, finish_reason=finish_reason, model="stand-in-model", engine="stand-in", token_ids=[1], logprobs=[-0.5])


@pytest.mark.parametrize("task_id", ["repo/issue-12", "fix print", "x" * 129])
def test_a_task_id_the_sandbox_cannot_name_a_workspace_after_is_an_invalid_task(tmp_path, task_id):
    actor = _Actor(tmp_path, [])
    summary = run_task(actor, {**TASK, "task_id": task_id}, LoopOptions())
    assert summary["steps"] == 0 and summary["errors"][0].startswith("invalid task: task_id: task id ")


def test_files_the_sandbox_cannot_lay_out_fail_the_task_alone(tmp_path):
    actor = _Actor(tmp_path, [])  # `a` is a file and the folder of `a/b`
    summary = run_task(actor, {**TASK, "files": {"a": "x = 1\n", "a/b": "y = 2\n"}}, LoopOptions())
    assert summary["steps"] == 0 and summary["errors"][0].startswith("task failed: its workspace could not be made: FileExistsError")


def test_a_state_that_cannot_be_saved_ends_the_task_with_its_step_recorded(tmp_path):
    class DamagedStore(StateStore):
        def save(self, task_id, state):
            raise sqlite3.DatabaseError("database disk image is malformed")

    answers = [_answer(NO_ACTION), _answer('{"next_focus": "find the print calls"}')] * 3
    actor = _Actor(tmp_path, answers, DamagedStore(tmp_path / "states.db"))
    summary = run_task(actor, TASK, LoopOptions(max_steps=3))
    assert summary["steps"] == 1 and "state not saved: DatabaseError: database disk image is malformed" in summary["errors"][0]
    (record,) = read_trajectories(tmp_path / "trajectories")  # the model's answer is kept, not lost with the state
    assert record["final"] and record["error"] == "state not saved: DatabaseError: database disk image is malformed"
    assert record["model_output"]["state_update"] == {"next_focus": "find the print calls"}
    assert record["completions"][0]["token_ids"] == [1]


def test_a_timed_out_generation_is_recorded_with_the_engines_model(tmp_path):
    timed_out = Completion(text="", finish_reason="error", error="generation timed out after 5 s", timed_out=True, engine="stand-in")
    actor = _Actor(tmp_path, [timed_out])
    summary = run_task(actor, TASK, LoopOptions(max_steps=2))
    assert summary["errors"] == ["step 1: generation timed out after 5 s"]
    (record,) = read_trajectories(tmp_path / "trajectories")
    assert record["final"] and record["model"] == "stand-in-model" and record["engine"] == "stand-in"
    assert record["temperature"] == 0.7 and record["seed"] == 1


def test_a_hung_sandbox_fails_each_step_with_its_timeout_and_the_task_ends_alone(tmp_path):
    from concurrent.futures import Future

    class HungPool:  # a jail that never answers
        def __init__(self, sandbox):
            self.sandbox = sandbox

        def submit_action(self, workspace, action):
            return Future()

    good = '<think>rename</think><action>{"pattern": "print($$$A)", "rewrite": "logging.info($$$A)", "language": "python"}'
    actor = _Actor(tmp_path, [_answer(good), _answer('{"history": "tried the rewrite"}')] * 2)
    actor.sandbox = HungPool(actor.sandbox.sandbox)
    summary = run_task(actor, TASK, LoopOptions(max_steps=2, sandbox_timeout_s=0.2))
    assert summary["errors"] == ["step 1: sandbox timed out after 0.2 s", "step 2: sandbox timed out after 0.2 s"]
    records = list(read_trajectories(tmp_path / "trajectories"))
    assert [(r["final"], r["sandbox_result"]["action"], r["reward"]["verified"]) for r in records] == [(False, None, False), (True, None, False)]
    assert "sandbox timed out after 0.2 s" in records[1]["prompt"]["messages"][1]["content"]  # the next step is told
