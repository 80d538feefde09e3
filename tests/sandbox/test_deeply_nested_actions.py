"""An action nested thousands deep (a model's runaway output, or a hostile one) is an invalid action, not a crash of
the process that checks it: ast-grep-py, which checks a rule on the host before any jail starts, overflows its stack
(SIGSEGV: the actor or teacher worker dies with it) past some thousands of levels, and Python's JSON and YAML readers
and writers raise RecursionError."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK_A_DEEP_RULE = """
from sandbox.models import InvalidAction, parse_action
from sandbox.astgrep import check_rule
rule = {"pattern": "print($A)"}
for _ in range(20_000):
    rule = {"not": rule}
try:
    check_rule(parse_action({"id": "deep", "language": "python", "rule": rule}))
    print("checked")
except InvalidAction as exc:
    print("invalid:", exc)
"""


def test_a_rule_nested_thousands_deep_is_invalid_not_a_crash_of_the_host_process():
    done = subprocess.run([sys.executable, "-c", CHECK_A_DEEP_RULE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # -11 (SIGSEGV) before
    assert done.stdout.startswith("invalid: the action nests 20002 levels deep"), done.stdout


def _nested(depth: int) -> dict:
    rule: dict = {"pattern": "print($A)"}
    for _ in range(depth):
        rule = {"all": [{"kind": "call"}, rule]}
    return {"id": "deep", "language": "python", "rule": rule}


@pytest.mark.parametrize("action", [
    '{"id": "x", "language": "python", "rule": ' + '{"not": ' * 100_000 + '{"pattern": "p"}' + "}" * 100_001,  # JSON text
    "id: x\nlanguage: python\nrule:\n  any: " + "[" * 5_000 + "]" * 5_000,  # YAML text
    _nested(400),  # what YAML's writer cannot write
])
def test_deeply_nested_action_text_or_mapping_is_invalid_not_an_exception(box, workspace, action):
    result = box.apply_action(workspace, action)
    assert not result.valid and "levels deep" in result.error and "at most 64" in result.error


def test_rules_as_deep_as_real_ones_still_run(box, workspace):
    result = box.apply_action(workspace, {**_nested(30), "fix": "log($A)"})  # 62 levels: ast-grep's own limit is not far above
    assert result.valid and result.matches == 1, result.error
