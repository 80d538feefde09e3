"""A teacher or actor step record as sft turns (pipelines/build/loop_rows.py)."""

from __future__ import annotations

from pipelines.build.loop_rows import sft_messages, task_text

OUTPUT = {"think": "rename the call", "action": {"pattern": "foo($$$A)", "rewrite": "bar($$$A)"}, "state_update": {"notes": ["renamed"]}}


def test_a_recorded_chat_prompt_is_kept_turn_by_turn_without_loss():
    record = {"prompt": {"messages": [{"role": "system", "content": "You refactor."}, {"role": "user", "content": "Rename foo"}]},
              "model_output": OUTPUT}
    messages = sft_messages(record)
    assert [(m["role"], m["content"], m["loss"]) for m in messages[:2]] == [("system", "You refactor.", False), ("user", "Rename foo", False)]
    assert messages[-1]["role"] == "assistant" and messages[-1]["loss"] and messages[-1]["content"].startswith("<think>")
    assert task_text(record) == "Rename foo"


def test_a_prompt_in_the_specifications_open_shape_becomes_the_user_turn_with_the_state():
    # seed 002 section 7: "prompt": {...}, "state_before": {...}; no `messages`
    record = {"task_id": "t-1", "step": 1, "prompt": {"instruction": "Rename foo to bar", "code": "foo()\n", "language": "python"},
              "state_before": {"notes": ["started"]}, "model_output": OUTPUT}
    messages = sft_messages(record)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    user = messages[0]
    assert user["loss"] is False
    assert "Rename foo to bar" in user["content"] and "foo()" in user["content"] and '<state>{"notes": ["started"]}</state>' in user["content"]
    assert task_text(record) == user["content"]


def test_a_prompt_given_as_one_string_is_the_user_turn():
    record = {"prompt": "Rename foo to bar in:\nfoo()", "model_output": OUTPUT}
    assert [(m["role"], m["content"]) for m in sft_messages(record)[:1]] == [("user", "Rename foo to bar in:\nfoo()")]


def test_a_record_without_any_prompt_or_state_has_only_the_completion():
    assert [m["role"] for m in sft_messages({"model_output": OUTPUT})] == ["assistant"]
    assert task_text({"model_output": OUTPUT}) == ""
