"""The actor loop end to end: records, states, malformed output, a scripted teacher over the OpenAI protocol."""

from __future__ import annotations

import pytest
from scripted_teacher import GOOD, STATE, ScriptedTeacher

from actors.prompting import parse_output
from actors.settings import load_actor_settings
from actors.state import StateStore
from trajforge.trajectories import ReadStats, read_trajectories

TASKS = [
    {"task_id": f"loop-{i}", "instruction": "Replace print calls with logging.info", "language": "python",
     "files": {"app.py": f"import logging\n\ndef run():\n    print('step', {i})\n"},
     "tests": ["python", "-c", "import app"]}
    for i in range(3)
]


@pytest.fixture(scope="module")
def teacher_url():
    server = ScriptedTeacher()
    yield server.url
    server.close()


def test_parse_output_records_every_problem():
    good = parse_output(GOOD, "\n<state_update>" + STATE + "</state_update>")
    assert good.errors == [] and good.action.pattern == "print($$$A)" and good.state_update.next_focus == "done"
    assert parse_output("no tags at all").errors == ["no <action> tag"]
    assert "not JSON" in parse_output("<action>{oops</action>").errors[0]
    assert "unknown language" in parse_output('<action>{"pattern": "x", "rewrite": "y", "language": "cobol"}</action>').errors[0]
    assert "invalid state update" in parse_output(GOOD, "<state_update>{\"mood\": 1}</state_update>").errors[0]


def test_parse_output_reads_tags_as_models_write_them():
    action = '{"pattern": "print($A)", "rewrite": "log($A)", "language": "python"}'
    fenced = parse_output(f'<THINK>rename it<Action type="rewrite">\n```json\n{action}\n```', '\n<state_update>```\n{"next_focus": "tests"}\n```')
    assert fenced.errors == [] and fenced.think == "rename it" and fenced.action.rewrite == "log($A)"
    assert fenced.state_update.next_focus == "tests"
    unclosed = parse_output(f"<think>first the calls <action>{action}")
    assert unclosed.think == "first the calls" and unclosed.action is not None


def test_a_think_that_mentions_the_tags_does_not_hide_the_answer():
    action = '{"pattern": "print($A)", "rewrite": "log($A)", "language": "python"}'
    state = '\n<state_update>{"next_focus": "tests"}</state_update>'
    think = "I write the <action> first, then a <state_update> with the focus"
    parsed = parse_output(f"<think>{think}</think>\n<action>{action}", state)
    assert parsed.errors == [] and parsed.think == think and parsed.action.rewrite == "log($A)"
    assert parsed.state_update.next_focus == "tests"


def test_the_recorded_think_is_what_the_model_wrote_in_it():
    """An unclosed <think> (an answer cut at max_tokens mid-thought) ends where the text does, not with the `</action>`
    the parser adds or the state update; a `</think>` the chat template opened in the prompt closes the text before it."""
    action = '{"pattern": "print($A)", "rewrite": "log($A)", "language": "python"}'
    cut = parse_output("<think>first the print calls, then")
    assert cut.think == "first the print calls, then" and cut.errors == ["no <action> tag"]
    assert parse_output("<think>no action yet", '\n<state_update>{"next_focus": "x"}').think == "no action yet"
    opened = parse_output(f"the calls are all print\n</think>\n<action>{action}", '\n<state_update>{"next_focus": "x"}')
    assert opened.think == "the calls are all print" and opened.action.rewrite == "log($A)" and opened.errors == []
    assert parse_output(f"<action>{action}</action> done </think>").think is None  # a `</think>` after the action closes nothing


def test_an_invalid_task_fails_alone_with_a_one_line_reason_and_is_one_row_of_the_report(tmp_path):
    from pathlib import Path

    from actors.loop import LoopOptions, run_task
    from actors.rollout import report

    summary = run_task(None, {"task_id": "no-code", "instruction": "x"}, LoopOptions())  # refused before the actor is used
    assert summary["errors"] == ["invalid task: task: a task needs files or pre"] and summary["steps"] == 0
    windows = run_task(None, {"task_id": "bad-name", "instruction": "x", "files": {"src\\app.py": "x"}}, LoopOptions())
    assert windows["errors"][0].startswith("invalid task: task: path 'src\\\\app.py' has '\\\\'") and windows["steps"] == 0
    table = report([{**summary, "errors": ["invalid task: 1 validation error\n  instruction\n    Field required"]}], Path("lake"))
    (row,) = [line for line in table.splitlines() if line.startswith("no-code")]
    assert row.endswith("invalid task: 1 validation error instruction Field required")
    assert len(table.splitlines()) == 5  # header, the task, a blank line, its language, the total


def test_loop_with_a_scripted_teacher_verifies_saves_state_and_writes_records(serve_url, teacher_url, tmp_path):
    import ray

    from actors.actor import start_actors
    from actors.run import run_loop

    settings = load_actor_settings(assignments=[("actors.engine", "openai"), ("actors.model", "teacher"), ("actors.num_cpus", 0),
                                                ("actors.openai.base_url", teacher_url), ("actors.openai.api_key_env", None),
                                                ("actors.lake", str(tmp_path / "lake")), ("actors.openai.max_retries", 1),
                                                ("actors.openai.backoff_s", 0.01), ("actors.loop.max_steps", 3)])
    failing = {**TASKS[0], "task_id": "loop-upstream-fails", "instruction": "UPSTREAM-FAILS: " + TASKS[0]["instruction"]}
    cut = {**TASKS[0], "task_id": "loop-cut-short", "instruction": "CUT-SHORT: " + TASKS[0]["instruction"]}
    (actor,) = start_actors(settings)
    try:
        summaries = run_loop([actor], [*TASKS, failing, cut])
    finally:
        ray.kill(actor, no_restart=True)
    *summaries, failed, cut_summary = summaries
    # an answer cut at max_tokens is malformed, whatever it holds: its action is not applied, no `</action>` or state
    # update is written for it, and the task goes on to its next step
    assert cut_summary["steps"] == 3 and not cut_summary["verified"]
    assert all("reached max_tokens (512) before </action>" in e for e in cut_summary["errors"])
    records = list(read_trajectories(tmp_path / "lake" / "raw" / "trajectories"))
    cut_records = [r for r in records if r["task_id"] == cut["task_id"]]
    assert [r["final"] for r in cut_records] == [False, False, True]
    for record in cut_records:
        assert record["model_output"]["raw"] == GOOD.removesuffix("</action>") and record["model_output"]["action"] is None
        assert record["sandbox_result"]["action"] is None and len(record["completions"]) == 1
    assert [(s["task_id"], s["verified"], s["steps"]) for s in summaries] == [(t["task_id"], True, 1) for t in TASKS]
    # an endpoint that fails after its retries ends the task at once: one step, its error, nothing called malformed
    assert failed["steps"] == 1 and "503" in failed["errors"][0] and not any("malformed" in e for e in failed["errors"])
    (failed_record,) = [r for r in records if r["task_id"] == failing["task_id"]]
    assert failed_record["final"] and "503" in failed_record["error"] and failed_record["model_output"]["errors"] == []
    assert (failed_record["model"], failed_record["engine"], failed_record["temperature"], failed_record["seed"]) == ("teacher", "openai", 0.7, 1)
    records = [r for r in records if r is not failed_record and r["task_id"] != cut["task_id"]]
    assert sorted(r["task_id"] for r in records) == [t["task_id"] for t in TASKS]
    record = records[0]
    assert record["sandbox_result"]["verified"] and record["sandbox_result"]["tests"]["exit_code"] == 0
    assert "+    logging.info('step'" in record["sandbox_result"]["action"]["diff"]
    assert record["model"] == "teacher" and record["engine"] == "openai" and record["seed"] == 1
    assert "<state>" in record["prompt"]["messages"][1]["content"]
    state = StateStore(tmp_path / "lake" / "state" / "states.db").load("loop-0")
    assert state.decisions == ["use logging.info"] and state.next_focus == "done"


def test_each_run_of_a_task_starts_from_an_empty_state_not_the_last_runs(serve_url, teacher_url, tmp_path):
    import ray

    from actors.actor import start_actors
    from actors.run import run_loop
    from actors.state import State

    settings = load_actor_settings(assignments=[("actors.engine", "openai"), ("actors.model", "teacher"), ("actors.num_cpus", 0),
                                                ("actors.openai.base_url", teacher_url), ("actors.openai.api_key_env", None),
                                                ("actors.lake", str(tmp_path / "lake")), ("actors.loop.max_steps", 1)])
    (actor,) = start_actors(settings)
    try:
        first, second = run_loop([actor], [TASKS[1]]) + run_loop([actor], [TASKS[1]])  # the task again, from its files again
    finally:
        ray.kill(actor, no_restart=True)
    assert first["verified"] and second["verified"]
    runs = [r for r in read_trajectories(tmp_path / "lake" / "raw" / "trajectories") if r["task_id"] == TASKS[1]["task_id"]]
    assert len(runs) == 2 and all(State.model_validate(r["state_before"]) == State() for r in runs)
    assert State.model_validate(runs[1]["state_after"]).next_focus == "done"  # what each run learnt is still saved


def test_loop_with_the_small_model_records_malformed_output_and_keeps_going(serve_url, small_model, tmp_path):
    import ray

    from actors.actor import start_actors
    from actors.run import run_loop

    settings = load_actor_settings(assignments=[("actors.model", str(small_model)), ("actors.num_cpus", 0),
                                                ("actors.lake", str(tmp_path / "lake")), ("actors.loop.max_steps", 2),
                                                ("actors.loop.max_tokens", 24), ("actors.loop.state_max_tokens", 8)])
    (actor,) = start_actors(settings)
    try:
        summaries = run_loop([actor], TASKS[:2] + [{"task_id": "broken"}])
        health = ray.get(actor.health.remote())
    finally:
        ray.kill(actor, no_restart=True)
    assert [s["steps"] for s in summaries[:2]] == [2, 2] and not any(s["verified"] for s in summaries)
    assert any("malformed output" in error for error in summaries[0]["errors"])
    assert "invalid task" in summaries[2]["errors"][0]
    stats = ReadStats()
    records = list(read_trajectories(tmp_path / "lake" / "raw" / "trajectories", stats))
    assert len(records) == 4 and stats.corrupt_lines == 0
    assert all(r["model_output"]["errors"] and r["model_output"]["raw"] for r in records)
    for record in records:  # the specification's fields, with what sampled it; every completion's tokens and log-probabilities
        assert {"task_id", "step", "prompt", "state_before", "model_output", "sandbox_result", "reward"} <= record.keys()
        assert {"think", "action", "state_update"} <= record["model_output"].keys()
        assert (record["model"], record["engine"], record["temperature"]) == (str(small_model), "transformers", 0.7)
        assert record["seed"] == record["step"] and record["completions"]
        for completion in record["completions"]:
            assert len(completion["token_ids"]) == len(completion["logprobs"]) == completion["completion_tokens"] > 0
    assert health["parse_failures"] >= 4
    store = StateStore(tmp_path / "lake" / "state" / "states.db")  # persisted every step, even with no <state_update>
    last = [record for record in records if record["task_id"] == TASKS[0]["task_id"]][-1]
    assert store.version(TASKS[0]["task_id"]) == 2 and store.load(TASKS[0]["task_id"]).model_dump() == last["state_after"]


def test_a_torn_last_line_is_skipped_and_counted(tmp_path):
    from trajforge.trajectories import TrajectoryWriter

    writer = TrajectoryWriter(tmp_path, "w")
    writer.append({"task_id": "t", "step": 1, "prompt": {}, "state_before": {}, "model_output": {}, "sandbox_result": {}, "reward": None})
    with open(writer.path, "ab") as handle:
        handle.write(b'{"task_id": "t", "step": 2, "pro')
    stats = ReadStats()
    assert [r["step"] for r in read_trajectories(tmp_path, stats)] == [1] and stats.corrupt_lines == 1
    with pytest.raises(ValueError, match="lacks"):
        writer.append({"task_id": "t"})


def test_a_state_over_the_token_budget_is_summarized_before_the_prompt_and_saved(small_model, engine, tmp_path):
    """The budget is counted with the engine's tokenizer (the `engine` fixture is the same model, in this process)."""
    from actors.actor import GenerationActor
    from actors.state import State, StateStore, render

    budget = 120
    settings = load_actor_settings(assignments=[("actors.model", str(small_model)), ("actors.lake", str(tmp_path / "lake")),
                                                ("actors.sandbox_workers", 1), ("actors.loop.max_steps", 1),
                                                ("actors.loop.max_tokens", 8), ("actors.loop.state_max_tokens", 4),
                                                ("actors.loop.state_token_budget", budget)])
    big = State(goals=["replace print calls with logging.info"], history=[f"step {i}: tried a pattern. it matched nothing" for i in range(3)],
                decisions=[f"decision {i}: keep the module's public names unchanged" for i in range(8)],
                hypotheses=[f"hypothesis {i}: the call sites use keyword arguments" for i in range(8)], next_focus="the run function")
    assert engine.count_tokens(render(big)) > budget
    actor = GenerationActor(settings)
    try:
        summary = actor.run_task({**TASKS[0], "task_id": "big-state", "state": big.model_dump()})  # a task that brings its state
    finally:
        actor.sandbox.close()
    assert summary["steps"] == 1
    (record,) = read_trajectories(tmp_path / "lake" / "raw" / "trajectories")
    shown = State.model_validate(record["state_before"])
    assert render(shown) in record["prompt"]["messages"][1]["content"] and render(big) not in record["prompt"]["messages"][1]["content"]
    assert record["state_summarized"] and record["state_tokens"] == engine.count_tokens(render(shown)) <= budget
    assert shown.goals == big.goals and shown.next_focus == big.next_focus
    assert StateStore(settings.state_db).load("big-state") == State.model_validate(record["state_after"])


def test_feedback_shows_a_long_or_capped_diff_cut_with_its_whole_size():
    from actors.prompting import FEEDBACK_CHARS, load_prompts, render_feedback

    templates = load_prompts()
    short = render_feedback(templates, {"valid": True, "matches": 1, "diff": "-a\n+b\n"}, None)
    assert "-a\n+b" in short and "cut here" not in short
    long_diff = "".join(f"+line {i}\n" for i in range(1000))
    long = render_feedback(templates, {"valid": True, "matches": 9, "diff": long_diff, "diff_bytes": len(long_diff)}, None)
    assert long_diff[:FEEDBACK_CHARS] in long and long_diff[: FEEDBACK_CHARS + 1] not in long
    assert f"[the diff is cut here; it has {len(long_diff)} bytes in all]" in long
    capped = render_feedback(templates, {"valid": True, "matches": 2, "diff": "+x\n", "diff_bytes": 90000, "diff_truncated": True}, None)
    assert "it has 90000 bytes in all" in capped


def test_an_in_process_engine_that_says_it_is_not_ok_makes_the_actor_unhealthy(small_model, tmp_path, monkeypatch):
    """vLLM's engine core can die under the actor (every request then fails): the supervisor must see it to restart."""
    from actors.actor import GenerationActor
    from actors.engines.openai_engine import OpenAIEngine

    settings = load_actor_settings(assignments=[("actors.model", str(small_model)), ("actors.lake", str(tmp_path / "lake")),
                                                ("actors.sandbox_workers", 1)])
    actor = GenerationActor(settings)
    try:
        assert actor.health()["ok"] and actor.health()["engine_ok"]
        monkeypatch.setattr(actor.engine, "health", lambda: {"engine": "vllm", "ok": False})
        assert not actor.health()["ok"] and not actor.health()["engine_ok"]
        monkeypatch.setattr(actor, "engine", OpenAIEngine("http://127.0.0.1:9/v1", "teacher", api_key_env=None))
        assert actor.health()["ok"]  # an upstream that does not answer is not mended by restarting this actor
    finally:
        actor.sandbox.close()
