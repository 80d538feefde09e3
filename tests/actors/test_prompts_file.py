"""Prompt files (configs/prompts.yaml, configs/teacher_prompts.yaml) are checked when loaded, before any task uses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.prompting import load_prompts, render_messages
from actors.state import State
from trajforge.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["prompts.yaml", "teacher_prompts.yaml"])
def test_the_shipped_prompt_files_load(name):
    templates = load_prompts(REPO / "configs" / name)
    messages = render_messages(templates, {"instruction": "rename f", "language": "python", "files": {"a.py": "f()\n"}}, State())
    assert [m["role"] for m in messages] == ["system", "user"] and "rename f" in messages[1]["content"]


@pytest.mark.parametrize(("text", "problem"), [
    ("system: hi\n", "lacks ['feedback', 'user']"),
    ("- a\n- b\n", "is not a mapping of templates"),
    ("", "is not a mapping of templates"),
    ("system: [1\n", "cannot be read: while parsing"),
    ("system: hi\nuser: '{state} {nope}'\nfeedback: '{verdict}'\n", "user uses {nope}; it may use {code}, {feedback}"),
    ("system: hi\nuser: '{state}'\nfeedback: '{verdict} {}'\n", "feedback uses {}"),
    ("system: hi\nuser: 'code {'\nfeedback: '{verdict}'\n", "user is not a template"),
    ("system: hi\nuser: [a]\nfeedback: '{verdict}'\n", "user is not text"),
])
def test_a_prompt_file_the_loop_cannot_fill_is_refused_naming_the_problem(tmp_path, text, problem):
    path = tmp_path / "prompts.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="prompt file .*prompts.yaml") as caught:
        load_prompts(path)
    assert problem in str(caught.value)


def test_literal_braces_and_a_braced_system_prompt_are_fine(tmp_path):
    path = tmp_path / "prompts.yaml"
    path.write_text("system: 'answer {\"pattern\": ...}'\nuser: '{state} {{literal}} {code}'\nfeedback: '{verdict}: {details}'\n")
    templates = load_prompts(path)
    user = render_messages(templates, {"instruction": "x", "files": {"a.py": "{x}"}}, State())[1]["content"]
    assert "{literal}" in user and "{x}" in user


def test_a_missing_prompt_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_prompts(tmp_path / "none.yaml")
