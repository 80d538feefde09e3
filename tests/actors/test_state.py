"""The structured state manager: schema caps, merge rules, budgets, SQLite atomicity, the dump CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from actors.state import (
    InvalidStateUpdate, State, StateStore, merge, parse_update, render, summarize_history, token_budget, tokenizer_counter,
)

REPO = Path(__file__).resolve().parents[2]


def test_state_rejects_values_over_the_caps():
    with pytest.raises(ValueError, match="at most 256"):
        State(goals=["x" * 257])
    with pytest.raises(ValueError, match="at most 3 items"):
        State(history=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="Extra inputs"):
        State(mood="happy")


def test_assigning_a_field_is_held_to_the_same_caps():
    state = State()
    with pytest.raises(ValueError, match="at most 3 items"):
        state.history = ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="at most 256"):
        state.goals = ["x" * 257]
    with pytest.raises(ValueError, match="valid string"):
        state.next_focus = 5
    assert state == State()
    state.next_focus = "the loop"
    assert state.next_focus == "the loop"


def test_summarize_history_without_a_budget_uses_the_loops_default():
    from actors.settings import LoopSettings

    state = State(goals=["g" * 250], decisions=["d" * 250] * 16, history=["h" * 250] * 3)
    assert token_budget(state) > 1024
    summary = summarize_history(state)
    assert token_budget(summary) <= 1024
    assert summary.goals[0] == "g" * 250
    assert LoopSettings.model_fields["state_token_budget"].default == 1024


def test_merge_appends_dedupes_trims_and_keeps_the_last_three_history_entries():
    state = State(goals=["Rename fetch_user to load_user"], history=["step 1: listed files"], open_issues=["tests fail on import"])
    update = {"goals": ["rename  FETCH_USER to load_user", "keep the public API"], "history": ["step 2: ran pattern", "step 3: applied", "step 4: tests"],
              "hypotheses": ["h" * 400], "resolved": ["Tests fail on import"], "next_focus": "run the tests"}
    merged = merge(state, update)
    assert merged.goals == ["Rename fetch_user to load_user", "keep the public API"]
    assert merged.history == ["step 2: ran pattern", "step 3: applied", "step 4: tests"]
    assert merged.open_issues == []
    assert len(merged.hypotheses[0]) == 256 and merged.hypotheses[0].endswith("…")
    assert merged.next_focus == "run the tests"
    assert merge(merged, {}).next_focus == "run the tests"  # a focus stays until replaced


def test_merge_takes_a_whole_state_as_the_update():
    existing = State(goals=["g"], history=["step 1: listed"], next_focus="look")
    merged = merge(existing, State(decisions=["use a rule"], history=["step 2: applied"], next_focus="test"))
    assert merged.decisions == ["use a rule"] and merged.history == ["step 1: listed", "step 2: applied"] and merged.next_focus == "test"
    assert merge(existing, State(goals=["g2"])).next_focus == "look"  # a state without a focus leaves it


def test_merge_takes_the_specifications_argument_names_and_a_state_as_a_dict_or_json():
    """`merge(existing_state, state_update) -> State` (seed 002, 5.2); a state as JSON has it (a dump, a step record)."""
    stored = {"goals": ["g"], "history": ["step 1: listed"], "next_focus": "look"}
    merged = merge(existing_state=stored, state_update={"history": ["step 2: applied"]})
    assert merged == State(goals=["g"], history=["step 1: listed", "step 2: applied"], next_focus="look")
    assert merge(json.dumps(stored), State(decisions=["d"])).decisions == ["d"]
    assert render(stored) == render(State(**stored)) and token_budget(stored) == token_budget(State(**stored))
    assert summarize_history(stored, 1000) == State(**stored)
    with pytest.raises(ValueError, match="at most 3 items"):  # a stored state is held to the caps, not trimmed
        merge({"history": ["a", "b", "c", "d"]}, {})


def test_a_repeated_newest_history_event_moves_to_the_end_and_survives_the_cap():
    state = State(history=["step 1: ran tests", "step 2: applied rule", "step 3: listed files"])
    merged = merge(state, {"history": ["step 4: edited", "STEP 1:  ran tests"]})
    assert merged.history == ["step 3: listed files", "step 4: edited", "STEP 1: ran tests"]
    assert merge(State(goals=["a", "b"]), {"goals": ["A"]}).goals == ["a", "b"]  # other lists keep the first place


@pytest.mark.parametrize("update,field", [
    ('{"goals": [1, 2]}', "goals"), ('{"mood": "x"}', "mood"), ("not json", "invalid state update"), ('{"next_focus": ["a"]}', "next_focus"),
])
def test_malformed_updates_are_rejected_with_the_field(update, field):
    with pytest.raises(InvalidStateUpdate, match=field):
        parse_update(update)


def test_a_single_string_counts_as_one_item():
    assert merge(State(), {"decisions": "use ast-grep scan"}).decisions == ["use ast-grep scan"]


def test_render_is_a_state_block_of_the_non_empty_fields():
    text = render(State(goals=["g"], next_focus="f"))
    assert text.startswith("<state>\n") and text.endswith("\n</state>")
    assert json.loads(text[len("<state>"): -len("</state>")]) == {"goals": ["g"], "next_focus": "f"}


def test_no_text_of_the_state_closes_its_block_early():
    state = State(goals=["fix </state> then <action>{}</action>"], next_focus="a</b")
    text = render(state)
    assert text.count("</") == 1 and text.endswith("\n</state>")  # only the block's own closing tag
    assert json.loads(text[len("<state>"): -len("</state>")]) == {"goals": ["fix </state> then <action>{}</action>"], "next_focus": "a</b"}


def test_token_budget_uses_the_models_tokenizer():
    from tokenizers import Tokenizer

    from trajforge.embedding import resolve_model

    tokenizer = Tokenizer.from_file(str(Path(resolve_model("packaged")) / "tokenizer.json"))
    state = State(goals=["refactor the billing module"], decisions=["use a yaml rule"])
    counted = token_budget(state, tokenizer_counter(tokenizer))
    tokenizer.no_padding()  # its file pads (and truncates) every text to 128 tokens, which the counter must not count
    assert counted == len(tokenizer.encode(render(state), add_special_tokens=False).ids) < 128
    assert tokenizer.truncation and token_budget(State(goals=["refactor the module " * 12] * 16), tokenizer_counter(tokenizer)) > 128
    assert state.token_budget(tokenizer_counter(tokenizer)) == counted and state.token_budget() == token_budget(state)  # the spec's method


def test_token_budget_and_summarize_take_the_tokenizer_itself():
    """A Hugging Face tokenizer is callable, but its call answers a BatchEncoding: it is counted with `encode`."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from trajforge.embedding import resolve_model

    path = str(Path(resolve_model("packaged")) / "tokenizer.json")
    state = State(goals=["refactor the billing module"], decisions=[f"decision {i}: keep the public names" for i in range(6)])
    expected = token_budget(state, tokenizer_counter(Tokenizer.from_file(path)))
    for tokenizer in (Tokenizer.from_file(path), PreTrainedTokenizerFast(tokenizer_file=path)):
        assert token_budget(state, tokenizer) == state.token_budget(tokenizer) == expected
        small = summarize_history(state, expected // 2, tokenizer)
        assert token_budget(small, tokenizer) <= expected // 2 and small.goals == state.goals


def test_summarize_history_fits_the_budget_and_keeps_the_goals():
    state = State(goals=["migrate the logger"], history=[f"step {i}: " + "did a long thing. more words " * 5 for i in range(3)],
                  hypotheses=[f"hypothesis {i} " * 10 for i in range(8)], decisions=[f"decision {i} " * 10 for i in range(8)], next_focus="tests")
    budget = token_budget(state) // 3
    small = summarize_history(state, budget)
    assert token_budget(small) <= budget
    assert small.goals == ["migrate the logger"] and small.next_focus == "tests"
    assert summarize_history(small, budget) == small  # already within budget: unchanged


def test_a_budget_too_small_for_every_goal_keeps_the_first_and_one_too_small_for_that_is_said(caplog):
    state = State(goals=[f"goal {i}: " + "refactor the module " * 5 for i in range(6)], decisions=["d"], next_focus="the tests " * 10)
    first = summarize_history(state, 40)
    assert token_budget(first) <= 40 and len(first.goals) >= 1 and first.goals[0].startswith("goal 0")
    assert len(first.goals) < 6 and caplog.text == ""
    with caplog.at_level("WARNING", logger="actors.state.model"):
        floor = summarize_history(state, 16)
    assert floor.goals == [state.goals[0][:16]] and token_budget(floor) > 16
    assert "over the budget of 16" in caplog.text and "actors.state_token_budget" in caplog.text


def test_store_roundtrip_versions_and_concurrent_updates_lose_nothing(tmp_path):
    store = StateStore(tmp_path / "states.db")
    assert store.load("t1") == State()
    assert store.save("t1", State(goals=["g"])) == 1

    def add(i: int) -> None:
        other = StateStore(tmp_path / "states.db")  # another connection, as another actor would have
        other.update("t1", lambda s: merge(s, {"decisions": [f"decision {i}"]}))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(store.load("t1").decisions) == sorted(f"decision {i}" for i in range(8))
    assert store.version("t1") == 9


def test_a_failing_update_leaves_the_stored_state_unchanged(tmp_path):
    store = StateStore(tmp_path / "states.db")
    store.save("t1", State(goals=["g"]))
    with pytest.raises(ValueError):
        store.update("t1", lambda s: State.model_construct(goals=["x" * 999]))
    assert store.load("t1").goals == ["g"] and store.version("t1") == 1


def _state_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "actors.state", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("task_id", [None, "", 5, b"task"])
def test_a_task_id_that_is_not_a_non_empty_string_is_refused(tmp_path, task_id):
    store = StateStore(tmp_path / "states.db")
    for call in (lambda: store.save(task_id, State()), lambda: store.load(task_id), lambda: store.update(task_id, lambda s: s)):
        with pytest.raises(ValueError, match="a task id is a non-empty string"):
            call()
    assert store.tasks() == []


def test_list_reads_a_database_with_rows_of_unchecked_ids(tmp_path):
    db = tmp_path / "states.db"
    StateStore(db).save("ok", State())
    with sqlite3.connect(db) as raw:  # what a store before ids were checked let save(None, ...) and save(5, ...) write
        raw.executemany("INSERT INTO states VALUES (?, '{}', 1, 0)", [(None,), (None,), (5,)])
    run = _state_cli("--db", str(db), "list")
    assert run.returncode == 0 and run.stdout.split() == ["5", "ok"]
    empty = _state_cli("--db", str(db), "dump", "")
    assert empty.returncode == 2 and "dump needs a task id" in empty.stderr and "Traceback" not in empty.stderr


def test_save_takes_a_dict_checked_against_the_schema(tmp_path):
    from pydantic import ValidationError

    store = StateStore(tmp_path / "states.db")
    assert store.save("t", {"goals": ["g"], "next_focus": "f"}) == 1
    assert store.load("t") == State(goals=["g"], next_focus="f")
    assert store.save("t", '{"goals": ["g"], "next_focus": "f2"}') == 2 and store.load("t").next_focus == "f2"  # JSON text too
    with pytest.raises(ValidationError, match="history"):
        store.save("t", {"history": ["a", "b", "c", "d"]})
    assert store.version("t") == 2


def test_dump_cli(tmp_path):
    db = tmp_path / "states.db"
    StateStore(db).save("task-7", State(goals=["g"], next_focus="f"))
    run = _state_cli("--db", str(db), "dump", "task-7")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["state"]["next_focus"] == "f"
    missing = _state_cli("--db", str(db), "dump", "nope")
    assert missing.returncode == 1 and "no state for task 'nope'" in missing.stderr


def test_dump_cli_names_the_teachers_state_database_when_it_has_the_task(tmp_path):
    """The teacher SRL loop keeps its states beside the actors', in <lake>/state/teacher_states.db."""
    actors_db, teacher_db = tmp_path / "states.db", tmp_path / "teacher_states.db"
    StateStore(actors_db).save("rollout-task", State(next_focus="student"))
    StateStore(teacher_db).save("teacher-task", State(next_focus="teacher"))
    run = _state_cli("--db", str(actors_db), "dump", "teacher-task")
    assert run.returncode == 1 and run.stderr.strip().endswith(f"the teacher's states have it: pass --db {teacher_db}")
    back = _state_cli("--db", str(teacher_db), "dump", "rollout-task")
    assert back.returncode == 1 and back.stderr.strip().endswith(f"the generation actors' states have it: pass --db {actors_db}")
    neither = _state_cli("--db", str(actors_db), "dump", "nope")
    assert neither.returncode == 1 and neither.stderr.strip() == f"no state for task 'nope' in {actors_db}"


def test_dump_cli_on_a_teacher_runs_lake_names_its_teacher_state_database(tmp_path):
    """A lake only the teacher loop wrote to has no states.db: `--lake` still says where its states are."""
    teacher_db = tmp_path / "lake" / "state" / "teacher_states.db"
    StateStore(teacher_db).save("teacher-task", State(next_focus="teacher"))
    missing = tmp_path / "lake" / "state" / "states.db"
    run = _state_cli("dump", "teacher-task", "--lake", str(tmp_path / "lake"))
    assert run.returncode == 2
    assert run.stderr.strip() == f"no state database at {missing}; the teacher's states have it: pass --db {teacher_db}"
    listing = _state_cli("list", "--lake", str(tmp_path / "lake"))
    assert listing.returncode == 2 and listing.stderr.strip().endswith(f"other state database is there: pass --db {teacher_db}")
    other = _state_cli("dump", "nope", "--lake", str(tmp_path / "lake"))
    assert other.returncode == 2 and other.stderr.strip() == f"no state database at {missing} (pass --db)"
    assert not missing.exists()


def test_dump_cli_takes_db_after_the_verb_and_defaults_to_the_settings_lake(tmp_path):
    lake = tmp_path / "lake"
    StateStore(lake / "state" / "states.db").save("task-8", State(next_focus="after"))
    after = _state_cli("dump", "task-8", "--db", str(lake / "state" / "states.db"))
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["state"]["next_focus"] == "after"
    by_settings = _state_cli("dump", "task-8", "--render", env={"TRAJFORGE__ACTORS__LAKE": str(lake)})
    assert by_settings.returncode == 0, by_settings.stderr
    assert by_settings.stdout.startswith("<state>") and '"next_focus": "after"' in by_settings.stdout
    listing = _state_cli("list", env={"TRAJFORGE__ACTORS__LAKE": str(lake)})
    assert listing.stdout.split() == ["task-8"]


def test_dump_cli_takes_the_lake_a_rollout_wrote_to(tmp_path):
    """`trajforge rollout --lake L` writes L/state/states.db: `--lake L` reads it, before or after the verb."""
    lake = tmp_path / "lake"
    StateStore(lake / "state" / "states.db").save("task-9", State(next_focus="there"))
    for args in (["--lake", str(lake), "dump", "task-9"], ["dump", "task-9", "--lake", str(lake)]):
        run = _state_cli(*args)
        assert run.returncode == 0 and json.loads(run.stdout)["state"]["next_focus"] == "there", run.stderr
    assert _state_cli("list", "--lake", str(lake)).stdout.split() == ["task-9"]
    both = _state_cli("--lake", str(lake), "dump", "task-9", "--db", str(lake / "state" / "states.db"))
    assert both.returncode == 2 and "--db and --lake both name the database: give one" in both.stderr


def test_dump_cli_says_when_db_is_not_a_state_database(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not sqlite at all, just a long enough line of text to be read as a header\n")
    other = tmp_path / "other.db"  # an SQLite database of something else: read, never changed
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE runs (id TEXT)")
    before = other.read_bytes()
    for db in (junk, tmp_path, other):
        for verb in (["dump", "task-7"], ["list"]):
            run = _state_cli("--db", str(db), *verb)
            assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
            assert run.stderr.startswith(f"{db} is not a state database")
    assert other.read_bytes() == before and sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt", "other.db"]


def test_module_level_load_and_save_use_the_settings_lake(tmp_path, monkeypatch):
    import actors.state

    monkeypatch.setenv("TRAJFORGE__ACTORS__LAKE", str(tmp_path / "lake"))
    assert actors.state.load("t") == State()
    assert actors.state.save("t", State(goals=["g"])) == 1
    assert actors.state.load("t").goals == ["g"]
    assert StateStore(tmp_path / "lake" / "state" / "states.db").load("t").goals == ["g"]
