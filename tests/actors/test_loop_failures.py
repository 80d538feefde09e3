"""The actor loop's failure isolation without Ray: a stand-in engine (or the small model in this process) answers, the
real sandbox, state store and trajectory writer record. Each task that cannot run fails alone, with its reason, and
never raises; an answer the model ended before its closing tag is recorded as malformed, exactly as written."""

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


def _answer(text: str, finish_reason: str = "stop", **ending) -> Completion:
    return Completion(text=text, finish_reason=finish_reason, model="stand-in-model", engine="stand-in", token_ids=[1], logprobs=[-0.5],
                      **ending)


GOOD = '<think>rename</think><action>{"pattern": "print($$$A)", "rewrite": "logging.info($$$A)", "language": "python"}'
AT_EOS = {"stop_reason": None, "stop_reason_known": True}  # the engine says: the model's end of text, no stop string


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


class _HungPool:
    """A jail that takes the call and never answers (`started`), or a pool whose jails never free up."""

    def __init__(self, sandbox, started: bool = True):
        self.sandbox, self.started = sandbox, started

    def submit_action(self, workspace, action):
        from concurrent.futures import Future

        future = Future()
        if self.started:
            future.set_running_or_notify_cancel()
        return future


def test_a_hung_sandbox_fails_each_step_with_its_timeout_and_the_task_ends_alone(tmp_path):
    actor = _Actor(tmp_path, [_answer(GOOD), _answer('{"history": "tried the rewrite"}')] * 2)
    actor.sandbox = _HungPool(actor.sandbox.sandbox)
    summary = run_task(actor, TASK, LoopOptions(max_steps=2, sandbox_timeout_s=0.2))
    timed_out = "sandbox timed out after 0.2 s applying the action"
    assert summary["errors"] == [f"step 1: {timed_out}", f"step 2: {timed_out}"]
    records = list(read_trajectories(tmp_path / "trajectories"))
    assert [(r["final"], r["sandbox_result"]["action"], r["reward"]["verified"]) for r in records] == [(False, None, False), (True, None, False)]
    assert timed_out in records[1]["prompt"]["messages"][1]["content"]  # the next step is told


def test_a_call_no_jail_takes_gives_up_after_waiting_a_few_timeouts(tmp_path):
    """A call queued behind other tasks' calls is not timed out while it waits (each of those ends within a timeout),
    but a pool that never frees a jail does not hold the task for ever either."""
    import time

    from actors.loop import JAIL_GRACE_S, QUEUED_TIMEOUTS

    actor = _Actor(tmp_path, [_answer(GOOD), _answer('{"history": "tried the rewrite"}')])
    actor.sandbox = _HungPool(actor.sandbox.sandbox, started=False)
    started = time.monotonic()
    summary = run_task(actor, TASK, LoopOptions(max_steps=1, sandbox_timeout_s=0.2))
    queued_s = QUEUED_TIMEOUTS * (0.2 + JAIL_GRACE_S)
    assert queued_s <= time.monotonic() - started < queued_s + 10
    assert summary["errors"] == [f"step 1: sandbox timed out applying the action: no jail was free for {queued_s:g} s"]


def test_an_answer_the_model_ended_before_its_action_closed_is_malformed_and_not_continued(tmp_path):
    actor = _Actor(tmp_path, [_answer(GOOD, **AT_EOS), _answer('{"next_focus": "never asked for"}')])
    summary = run_task(actor, TASK, LoopOptions(max_steps=1))
    assert len(actor.engine.answers) == 1  # no second generation after the model's end
    (record,) = read_trajectories(tmp_path / "trajectories")
    assert record["model_output"]["raw"] == GOOD  # no `</action>` the model never wrote
    assert record["model_output"]["errors"] == ["the model ended its answer before </action>"]
    assert record["model_output"]["action"] is None and record["sandbox_result"]["action"] is None
    assert len(record["completions"]) == 1 and record["error"] is None
    assert record["completions"][0]["stop_reason"] is None  # the record says why: the model's own end
    assert summary["errors"] == ["step 1: malformed output: the model ended its answer before </action>"]


def test_an_answer_stopped_at_its_action_goes_on_to_a_state_update_the_model_may_leave_open(tmp_path):
    state = '{"next_focus": "the tests"}'
    actor = _Actor(tmp_path, [_answer(GOOD, stop_reason="</action>", stop_reason_known=True), _answer(state, **AT_EOS)])
    summary = run_task(actor, TASK, LoopOptions(max_steps=1))
    (record,) = read_trajectories(tmp_path / "trajectories")
    assert record["model_output"]["raw"] == GOOD + "</action>\n<state_update>" + state  # closed where the engine stopped it only
    assert record["model_output"]["errors"] == ["the model ended its answer before </state_update>"]
    assert record["sandbox_result"]["verified"] and summary["verified"] and len(record["completions"]) == 2
    assert [completion["stop_reason"] for completion in record["completions"]] == ["</action>", None]


def test_an_engine_that_cannot_tell_a_stop_string_from_the_end_is_taken_to_have_stopped(tmp_path):
    actor = _Actor(tmp_path, [_answer(GOOD), _answer('{"next_focus": "done"}')])  # an OpenAI endpoint: "stop" only
    run_task(actor, TASK, LoopOptions(max_steps=1))
    (record,) = read_trajectories(tmp_path / "trajectories")
    assert record["model_output"]["raw"] == GOOD + '</action>\n<state_update>{"next_focus": "done"}</state_update>'
    assert record["model_output"]["errors"] == [] and record["sandbox_result"]["verified"]
    assert all("stop_reason" not in completion for completion in record["completions"])  # unknown is not recorded as null


def test_the_small_model_ending_its_answer_at_once_is_recorded_as_it_wrote_it(tmp_path, engine):
    """The transformers engine in the loop, its end-of-text token made certain: one generation, an empty answer."""
    eos = engine.tokenizer.eos_token_id

    class EndsAtOnce:
        name, model, tokenizer = engine.name, engine.model, engine.tokenizer

        def __init__(self):
            self.requests = []

        def generate(self, requests):
            self.requests += requests
            return engine.generate([request.model_copy(update={"logit_bias": {eos: 100.0}}) for request in requests])

    actor = _Actor(tmp_path, [])
    actor.engine = EndsAtOnce()
    run_task(actor, TASK, LoopOptions(max_steps=1, max_tokens=8))
    (record,) = read_trajectories(tmp_path / "trajectories")
    assert len(actor.engine.requests) == 1 and [c["token_ids"] for c in record["completions"]] == [[eos]]
    assert record["model_output"]["raw"] == ""
    assert record["model_output"]["errors"] == ["the model ended its answer before </action>", "no <action> tag"]


def test_a_step_records_what_its_answer_was_sampled_with_not_what_the_upstream_refused(tmp_path):
    # an upstream that refused temperature and top_p for its model (the openai engine left them out): its defaults sampled
    refused = _answer(NO_ACTION, ignored=["temperature", "top_p"])
    actor = _Actor(tmp_path, [refused, _answer('{"history": "looked"}', ignored=["temperature", "top_p"])])
    summary = run_task(actor, TASK, LoopOptions(max_steps=1, temperature=0.3, seed=5))
    assert summary["steps"] == 1, summary
    (record,) = read_trajectories(tmp_path / "trajectories")
    assert (record["temperature"], record["top_p"], record["seed"]) == (None, None, 6)  # the seed was sent: seed + step
