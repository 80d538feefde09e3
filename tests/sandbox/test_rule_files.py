"""A YAML rule file given to `apply_action` as a path (seed 002 section 4.1: inline patterns and YAML rule files)."""

from __future__ import annotations

RULE = "id: no-print\nlanguage: python\nrule:\n  pattern: print($A)\nfix: log($A)\n"


def test_a_rule_file_path_is_applied_like_its_text(box, workspace, tmp_path):
    rule = tmp_path / "no-print.yml"
    rule.write_text(RULE)
    result = box.apply_action(workspace, rule)
    assert result.valid and result.matches == 1 and result.action["id"] == "no-print"
    assert "    log(x)\n" in (workspace / "app.py").read_text()


def test_a_rule_file_that_cannot_be_read_is_invalid_with_the_reason(box, workspace, tmp_path):
    result = box.apply_action(workspace, tmp_path / "missing.yml")
    assert not result.valid and "cannot read the action file" in result.error and "No such file" in result.error
    latin1 = tmp_path / "latin1.yml"
    latin1.write_bytes(RULE.replace("log", "caf\xe9").encode("latin-1"))
    result = box.apply_action(workspace, latin1)
    assert not result.valid and "not UTF-8" in result.error


def test_a_string_is_the_action_itself_never_a_file_name(box, workspace, tmp_path):
    """Text may come from a model: a string is parsed, never opened, whatever file it names."""
    rule = tmp_path / "no-print.yml"
    rule.write_text(RULE)
    result = box.apply_action(workspace, str(rule))
    assert not result.valid and "must be a mapping" in result.error


def test_a_rule_file_with_several_rules_says_an_action_is_one_rule(box, workspace, tmp_path):
    """It read as "not valid YAML or JSON", which it is (two documents)."""
    rule = tmp_path / "two.yml"
    rule.write_text(RULE + "---\n" + RULE.replace("no-print", "again"))
    for action in (rule, rule.read_text()):
        result = box.apply_action(workspace, action)
        assert not result.valid and "several YAML documents (line 6 starts another)" in result.error
        assert "not valid YAML" not in result.error
