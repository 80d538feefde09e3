"""A model's `<state_update>` or `<action>` nested thousands deep (runaway output) is invalid, naming why, and recorded
as the step's error as any malformed one is: `json.loads` raised RecursionError, which failed the whole task instead."""

from __future__ import annotations

import pytest

from actors.prompting import parse_output
from actors.state.model import InvalidStateUpdate, parse_update

DEEP = '{"goals": ' + "[" * 50_000 + "]" * 50_000 + "}"


def test_a_deeply_nested_update_is_invalid_not_a_recursion_error():
    with pytest.raises(InvalidStateUpdate, match="nested too deeply"):
        parse_update(DEEP)


def test_a_step_with_one_is_parsed_with_the_error_recorded():
    parsed = parse_output('<think>t</think><action>{"pattern": "print($A)", "rewrite": "log($A)", "language": "python"}</action>',
                          f"<state_update>{DEEP}</state_update>")
    assert parsed.action is not None and parsed.state_update is None
    assert any("nested too deeply" in error for error in parsed.errors)


def test_a_step_whose_action_is_nested_thousands_deep_is_parsed_with_the_error_recorded():
    parsed = parse_output("<think>t</think><action>" + "[" * 50_000 + "]" * 50_000 + "</action>", '<state_update>{"goals": ["g"]}</state_update>')
    assert parsed.action is None and parsed.state_update is not None
    assert parsed.errors == ["action is nested too deeply to read (an action is an object of a few levels)"]
