"""The actor loop (specification section 6.2) on Ray: one task's steps inside a `GenerationActor`.

Per step: load the state (summarized when its `<state>` block is over `state_token_budget` tokens of the
engine's tokenizer), render the prompt with its `<state>` block, generate until `</action>`,
continue until `</state_update>` (not where the engine says the model ended its answer first: that is
malformed output, recorded exactly as written), parse the tags, apply the action in the sandbox (and run the
task's tests when it has some), merge and save the state, append one record to
`lake/raw/trajectories/`. A task stops when its action is verified or after `max_steps`. Any
failure (an engine error, a sandbox timeout, malformed output) is recorded in the step and the task
goes on or ends alone; nothing is raised to the caller. A generation that failed (an engine or endpoint
error after its retries, a timeout) ends its task with that step marked `final` and its `error`: there is
no model output to judge (it is not recorded as malformed), the next step would fail the same way, and
after a timeout the engine is still busy with it.
"""

from __future__ import annotations

import time
import traceback
from concurrent.futures import TimeoutError as FutureTimeout
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from actors.engines.types import Completion, GenerationRequest
from actors.prompting import ACTION_STOP, STATE_OPEN, STATE_STOP, ParsedOutput, parse_output, render_feedback, render_messages
from actors.state import State, merge, summarize_history, token_budget, tokenizer_counter
from sandbox.languages import EXTENSIONS
from sandbox.models import check_relative_path
from sandbox.workspace import check_task_id
from trajforge.errors import TrajforgeError


class LoopTask(BaseModel):
    """A refactoring task: files (or one `pre` snippet), an instruction, optional tests and gold result."""

    model_config = ConfigDict(extra="ignore")

    task_id: str
    instruction: str
    language: str = "python"
    files: dict[str, str] = Field(default_factory=dict)
    pre: str | None = None
    post: str | None = None
    tests: str | list[str] | None = None
    gold_action: dict[str, Any] | None = None
    """The known-good action of a synthetic task (the oracle teacher replays it; never shown to a model)."""
    state: State = Field(default_factory=State)
    """The state step 1 starts from (the specification's "empty or prior state"): empty unless the task brings one,
    such as a handoff from an earlier agent. Never an earlier run's: each run starts from the task's files."""

    @field_validator("task_id")
    @classmethod
    def _task_id(cls, task_id: str) -> str:
        return check_task_id(task_id)  # the sandbox names the task's workspace after it: refused here, as an invalid task

    @model_validator(mode="after")
    def _files(self) -> LoopTask:
        if not self.files:
            if self.pre is None:
                raise ValueError("a task needs files or pre")
            self.files = {f"snippet{EXTENSIONS.get(self.language, ('.txt',))[0]}": self.pre}
        for name in self.files:
            check_relative_path(name)  # refused here, as an invalid task, not when its workspace is made
        return self


def task_problems(exc: ValidationError) -> str:
    """What is wrong with a task, field by field on one line (`task: a task needs files or pre; instruction: Field required`)."""
    return "; ".join(f"{'.'.join(str(part) for part in error['loc']) or 'task'}: {error['msg'].removeprefix('Value error, ')}"
                     for error in exc.errors(include_url=False))


class LoopOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(default=3, ge=1)
    max_tokens: int = Field(default=512, ge=1)
    state_max_tokens: int = Field(default=256, ge=1)
    state_token_budget: int = Field(default=1024, ge=16)
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int = 0
    sandbox_timeout_s: float = Field(default=90.0, gt=0)


def _prompt_text(engine: Any, messages: list[dict[str, str]]) -> str | None:
    """The chat rendered with the model's own template (so the second call continues it exactly)."""
    tokenizer = getattr(engine, "tokenizer", None)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return None
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def state_token_counter(engine: Any) -> Callable[[str], int] | None:
    """The engine's own token count (its tokenizer); None, the 4-characters-a-token estimate, for an engine
    without a tokenizer (an OpenAI-compatible endpoint, the oracle teacher)."""
    if callable(getattr(engine, "count_tokens", None)):
        return engine.count_tokens
    tokenizer = getattr(engine, "tokenizer", None)
    return tokenizer_counter(tokenizer) if tokenizer is not None else None


def state_within_budget(stored: State, options: LoopOptions, count_tokens: Callable[[str], int] | None) -> tuple[State, int]:
    """The state to show the model, summarized when over `state_token_budget`, and the tokens its block takes."""
    shown = summarize_history(stored, options.state_token_budget, count_tokens)
    return shown, token_budget(shown, count_tokens)


def generate_step(actor: Any, messages: list[dict[str, str]], options: LoopOptions, seed: int) -> tuple[Completion, Completion | None]:
    """Two generations with the actor's engine: to `</action>`, then on to `</state_update>`."""
    prompt = _prompt_text(actor.engine, messages)
    common = {"temperature": options.temperature, "top_p": options.top_p, "seed": seed}
    first_request = GenerationRequest(prompt=prompt, max_tokens=options.max_tokens, stop=[ACTION_STOP], **common) if prompt \
        else GenerationRequest(messages=messages, max_tokens=options.max_tokens, stop=[ACTION_STOP], **common)
    first = actor.timed_generate([first_request])[0]
    if first.finish_reason != "stop" or _ended_before(first, ACTION_STOP):  # an error, cut at max_tokens, or the
        return first, None  # model's own end: no `</action>` to continue after
    so_far = first.text + ACTION_STOP + STATE_OPEN
    second_request = GenerationRequest(prompt=prompt + so_far, max_tokens=options.state_max_tokens, stop=[STATE_STOP], **common) if prompt \
        else GenerationRequest(messages=[*messages, {"role": "assistant", "content": so_far}], continue_final_message=True,
                               max_tokens=options.state_max_tokens, stop=[STATE_STOP], **common)
    return first, actor.timed_generate([second_request])[0]


def _ended_before(completion: Completion | None, stop: str) -> bool:
    """Whether the engine says this generation ended without writing `stop` (the model's end of text): every engine
    reports both as finish_reason "stop". False where the engine cannot tell (an OpenAI endpoint that is not vLLM)."""
    return (completion is not None and completion.finish_reason == "stop" and completion.stop_reason_known
            and completion.stop_reason != stop)


def _completion_record(completion: Completion) -> dict[str, Any]:
    """What a step record keeps of a completion: the sampled tokens and their log-probabilities, why it ended
    (`stop_reason` only where the engine could tell: the stop string, or null for the model's own end), its cost."""
    kept = completion.model_dump(include={"token_ids", "logprobs", "finish_reason", "prompt_tokens", "completion_tokens", "latency_s"})
    if completion.stop_reason_known:
        kept["stop_reason"] = completion.stop_reason
    return kept


def _state_part(second: Completion | None) -> str:
    """The `<state_update>` block as the model wrote it: closed only where its generation stopped at `</state_update>`."""
    if second is None:
        return ""
    return STATE_OPEN + second.text + (STATE_STOP if second.finish_reason == "stop" and not _ended_before(second, STATE_STOP) else "")


def _cut_short(first: Completion, second: Completion | None, options: LoopOptions) -> list[str]:
    """Malformed-output entries for a generation that ended before its closing tag: cut at its token limit, or the
    model ended its answer there (the tag was never written)."""
    cuts = []
    if first.finish_reason == "length":
        cuts.append(f"the answer reached max_tokens ({options.max_tokens}) before {ACTION_STOP}")
    if _ended_before(first, ACTION_STOP):
        cuts.append(f"the model ended its answer before {ACTION_STOP}")
    if second is not None and second.finish_reason == "length":
        cuts.append(f"the state update reached state_max_tokens ({options.state_max_tokens}) before {STATE_STOP}")
    if _ended_before(second, STATE_STOP):
        cuts.append(f"the model ended its answer before {STATE_STOP}")
    return cuts


def _model_name(actor: Any) -> str:
    """The model of the actor's engine, for a step whose completion does not say (a generation that timed out)."""
    engine = getattr(actor, "engine", None)
    return str(getattr(engine, "model", "") or "")


def _sandbox(actor: Any, workspace, action, task: LoopTask, options: LoopOptions) -> tuple[dict | None, dict | None, str | None]:
    """The action's result, the tests' result (run when the action changed something) and the error that cut the call
    short; an action that applied is kept even when its tests then time out or fail to start."""
    result = None
    try:
        result = _in_a_jail(actor.sandbox.submit_action(workspace, action), options.sandbox_timeout_s)
        tests = None
        if result.valid and result.files_changed and task.tests:
            tests = _in_a_jail(actor.sandbox.submit_tests(workspace, task.tests), options.sandbox_timeout_s)
        return result.model_dump(mode="json"), tests.model_dump(mode="json") if tests else None, None
    except Exception as exc:  # a jail that cannot start fails this step too, recorded
        doing = "applying the action" if result is None else "running the task's tests"
        if isinstance(exc, SandboxTimeout):
            error = f"sandbox timed out {doing}: {exc}"
        elif isinstance(exc, FutureTimeout):
            error = f"sandbox timed out after {options.sandbox_timeout_s} s {doing}"
        else:
            error = f"sandbox failed {doing}: {type(exc).__name__}: {exc}"
    return (result.model_dump(mode="json") if result is not None else None), None, error


JAIL_GRACE_S = 1.0
"""How long past the loop's sandbox timeout the actor's jails let a run go on (actors/actor.py: loop_jail_settings)."""
QUEUED_TIMEOUTS = 4
"""How many sandbox timeouts (each with the jails' grace) a call may wait for a free jail: an actor runs 4 tasks at once,
so at most 3 calls are ahead of it, and each ends within one."""


class SandboxTimeout(TrajforgeError, TimeoutError):
    """No jail took the call while it waited `QUEUED_TIMEOUTS` timeouts."""


def _in_a_jail(future, timeout_s: float):
    """The call's result within `timeout_s` of its start in a jail (FutureTimeout past it). Time spent queued behind
    other tasks' calls is not counted against it, so a hung call fails its own task, not those waiting for its jail."""
    queued_s = QUEUED_TIMEOUTS * (timeout_s + JAIL_GRACE_S)
    waited_until = time.monotonic() + queued_s
    while not future.running() and not future.done():
        if time.monotonic() > waited_until and future.cancel():  # else a jail took it just now
            raise SandboxTimeout(f"no jail was free for {queued_s:g} s")
        time.sleep(0.02)
    return future.result(timeout=timeout_s)


def run_task(actor: Any, task_data: dict[str, Any], options: LoopOptions, run_id: str | None = None) -> dict[str, Any]:
    """Run one task to completion inside `actor`; returns a summary, never raises. `run_id` (this run's, one per call) is
    recorded in every step record, so the records of each run of a task stay apart; so is the actor's `job_id` (a
    teacher job's, which every run of that job shares; None for a generation actor)."""
    started = time.perf_counter()
    summary: dict[str, Any] = {"task_id": task_data.get("task_id"), "steps": 0, "verified": False, "errors": []}
    try:
        task = LoopTask.model_validate(task_data)
    except ValidationError as exc:
        summary["errors"].append(f"invalid task: {task_problems(exc)}")
        return summary
    from sandbox.workspace import read_tree

    box = actor.sandbox.sandbox
    try:
        workspace = box.prepare_workspace(task.task_id, task.files)
    except Exception as exc:  # files the sandbox cannot lay out (a file where another needs a folder), a full disk
        summary["errors"].append(f"task failed: its workspace could not be made: {type(exc).__name__}: {exc}")
        return summary
    feedback = ""
    count_tokens = state_token_counter(getattr(actor, "engine", None))
    carried = task.state  # whatever an earlier run (or another teacher) of the task saved is not this run's state
    try:
        for step in range(1, options.max_steps + 1):
            stored = carried
            state, state_tokens = state_within_budget(stored, options, count_tokens)
            current = {path: content.decode("utf-8", "replace") for path, content in read_tree(workspace, 1 << 20).items()
                       if path in task.files and isinstance(content, bytes)}
            messages = render_messages(actor.templates, {**task.model_dump(), "files": current}, state, feedback)
            seed = options.seed + step
            first, second = actor.propose(messages, options, seed, task)
            broken = next((c for c in (first, second) if c is not None and c.finish_reason == "error"), None)
            failed, error = broken is not None, (broken.error or "generation failed") if broken else None
            parsed = ParsedOutput() if first is broken else parse_output(first.text, _state_part(second) if second is not broken else "")
            if not error:
                parsed.errors = _cut_short(first, second, options) + parsed.errors
            if first.finish_reason == "length" or _ended_before(first, ACTION_STOP):
                parsed.action = None  # the answer ended before `</action>`: its action was never closed, not applied
            if not error and parsed.errors:
                actor.count("parse_failures")
            result = tests = None
            if parsed.action is not None and not error:
                result, tests, error = _sandbox(actor, workspace, parsed.action, task, options)
                if error or (result and not result["valid"]):
                    actor.count("sandbox_failures")
            state_after = merge(state, parsed.state_update) if parsed.state_update else state
            # persisted every step (a summary too: the next step starts from what this one showed), so every task
            # that ran has a state to dump, even one whose model never wrote a <state_update>. A state that cannot be
            # saved (a damaged or locked database) ends the task, but this step's record is still written.
            try:
                actor.states.save(task.task_id, state_after)
            except Exception as exc:
                error = "; ".join(filter(None, [error, f"state not saved: {type(exc).__name__}: {exc}"]))
                failed = True
            carried = state_after
            # three rewards, each on its own: the action applied cleanly (and changed something), the code equals the
            # known result, the task's tests pass
            verified = bool(result and result["valid"] and result["files_changed"])
            tests_due = bool(verified and task.tests)  # and did not finish (timed out, or could not start): not passed
            tests_pass = (False if tests_due else None) if tests is None else tests["exit_code"] == 0
            matches_gold = None
            if task.post is not None and len(task.files) == 1 and result is not None:
                (name,) = task.files  # an action that did not apply left the code as it was: it matches only if that was the result
                matches_gold = read_tree(workspace, 1 << 20).get(name) == task.post.encode("utf-8")
            solved = verified and matches_gold is not False and tests_pass is not False  # where a result or tests are known, they agree
            final = solved or failed or step == options.max_steps
            actor.trajectories.append({
                "task_id": task.task_id, "step": step, "prompt": {"messages": messages}, "state_before": state.model_dump(),
                "state_tokens": state_tokens, "state_summarized": state != stored,
                "model_output": {**parsed.to_record(), "raw": first.text + (ACTION_STOP + _state_part(second) if second else "")},
                "sandbox_result": {"action": result, "tests": tests, "verified": verified},
                "reward": {"verified": verified, "matches_gold": matches_gold, "tests_pass": tests_pass},
                "final": final, "teacher": getattr(actor, "teacher", None), "run_id": run_id, "job_id": getattr(actor, "job_id", None),
                "state_after": state_after.model_dump(), "error": error, "model": first.model or _model_name(actor), "engine": first.engine,
                # what the answer was sampled with: null where the upstream refused the setting for its model
                **{name: None if name in first.ignored else value
                   for name, value in (("temperature", options.temperature), ("top_p", options.top_p), ("seed", seed))},
                "actor": actor.index,
                "completions": [_completion_record(c) for c in (first, second) if c is not None],
                "created_at": time.time(),
            })
            summary["steps"] = step
            if error:
                summary["errors"].append(f"step {step}: {error}")
            if parsed.errors:
                summary["errors"].append(f"step {step}: malformed output: {'; '.join(parsed.errors)[:300]}")
            summary["verified"] = summary["verified"] or verified
            if solved:
                summary["matches_gold"] = matches_gold
                break
            if failed:
                break
            feedback = render_feedback(actor.templates, result, error or ("; ".join(parsed.errors) or None))
    except Exception as exc:  # the task fails alone, with its reason
        summary["errors"].append(f"task failed: {type(exc).__name__}: {exc}")
        summary["traceback"] = traceback.format_exc(limit=5)
    finally:
        box.cleanup(workspace)
    summary["wall_s"] = round(time.perf_counter() - started, 3)
    return summary
