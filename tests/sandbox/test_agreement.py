"""The jailed result equals an unjailed ast-grep CLI run on a copy, for Python, JS/TS and Java."""

from __future__ import annotations

import subprocess

import pytest

from sandbox.astgrep import NO_IGNORE, cli_binary
from sandbox.models import parse_action
from sandbox.workspace import read_tree, unified_diff

SOURCES = {
    "python": {"src/app.py": "import logging\n\ndef handle(req, retries=3):\n    print(req.id, retries)\n    data = fetch(req.url, timeout=5)\n    print(len(data))\n    return data\n",
               "src/util.py": "def helper():\n    print('ünïcode ✓')\n    return [x * 2 for x in range(3)]\n"},
    "javascript": {"web/index.js": "const api = require('./api');\nconsole.log('start', api.url);\nvar count = 0;\nfunction tick() { count += 1; console.log(count); }\n",
                   "web/api.js": "module.exports = { url: 'http://localhost' };\nvar debug = false;\n"},
    "typescript": {"lib/service.ts": "export function load(id: string): Promise<any> {\n  const raw = fetchJson(id) as any;\n  return Promise.resolve(raw as any);\n}\n"},
    "java": {"src/Main.java": "public class Main {\n  public static void main(String[] args) {\n    System.out.println(\"hello\");\n    System.out.println(args.length);\n    String s = String.valueOf(42);\n  }\n}\n"},
}

CASES = [
    ("python", {"pattern": "print($A)", "rewrite": "logging.info($A)", "language": "python"}),
    ("python", {"pattern": "print($$$ARGS)", "rewrite": "logger.debug($$$ARGS)", "language": "py"}),
    ("python", {"id": "kw-timeout", "language": "python", "rule": {"pattern": "fetch($URL, timeout=$T)"},
                "constraints": {"T": {"regex": "^[0-9]+$"}}, "fix": "fetch($URL, timeout=$T * 2)"}),
    ("python", {"id": "list-to-gen", "language": "python", "rule": {"pattern": "[$E for $X in $IT]"},
                "fix": "list($E for $X in $IT)"}),
    ("python", {"id": "warn-print", "language": "python", "rule": {"pattern": "print($A)"}, "fix": "log($A)", "message": "use logging",
                "severity": "warning", "note": "print goes to stdout", "metadata": {"owner": "platform"}}),  # reporting keys pass through
    ("javascript", {"pattern": "console.log($$$ARGS)", "rewrite": "logger.info($$$ARGS)", "language": "javascript"}),
    ("javascript", {"id": "no-var", "language": "javascript", "rule": {"pattern": "var $NAME = $VALUE"},
                    "constraints": {"NAME": {"regex": "^(count|debug)$"}}, "fix": "let $NAME = $VALUE"}),
    ("javascript", {"id": "upper-const", "language": "javascript", "rule": {"pattern": "var $NAME = $VALUE"},
                    "transform": {"UPPER": {"convert": {"source": "$NAME", "toCase": "upperCase"}}}, "fix": "const $UPPER = $VALUE"}),
    ("typescript", {"pattern": "$E as any", "rewrite": "$E as unknown", "language": "ts"}),
    ("java", {"pattern": "System.out.println($A)", "rewrite": "LOG.info($A)", "language": "java"}),
    ("java", {"id": "value-of", "language": "java", "rule": {"pattern": "String.valueOf($N)"},
              "constraints": {"N": {"kind": "decimal_integer_literal"}},
              "transform": {"QUOTED": {"substring": {"source": "$N", "startChar": 0}}}, "fix": "\"$QUOTED\""}),
]


def unjailed(tmp_path, files, action) -> tuple[str, list[str]]:
    copy = tmp_path / "copy"
    for name, content in files.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text(content)
    before = read_tree(copy, 1 << 20)
    parsed = parse_action(action)
    options = [f"--no-ignore={kind}" for kind in NO_IGNORE]
    if parsed.type == "rewrite":
        command = [cli_binary(), "run", "-p", parsed.pattern, "-r", parsed.rewrite, "-l", parsed.language, *options, "-U", str(copy)]
    else:
        (tmp_path / "rule.yml").write_text(parsed.to_yaml())
        command = [cli_binary(), "scan", "--rule", str(tmp_path / "rule.yml"), *options, "-U", str(copy)]
    subprocess.run(command, cwd=tmp_path, capture_output=True, check=False, timeout=60)
    return unified_diff(before, read_tree(copy, 1 << 20))


@pytest.mark.parametrize("language,action", CASES, ids=[f"{lang}-{a.get('id') or a['pattern']}" for lang, a in CASES])
def test_jailed_diff_equals_unjailed_cli(box, tmp_path, language, action):
    files = SOURCES[language]
    workspace = box.prepare_workspace("agree", files)
    try:
        result = box.apply_action(workspace, action)
    finally:
        box.cleanup(workspace)
    assert result.valid, result.error
    assert result.jail == "nsjail"
    expected_diff, expected_changed = unjailed(tmp_path, files, action)
    assert expected_diff, "the case must change something"
    assert result.diff == expected_diff
    assert result.files_changed == expected_changed
    assert result.matches >= 1


def test_nested_matches_are_counted_but_one_pass_rewrites_the_outermost(box):
    workspace = box.prepare_workspace("nested", {"a.py": "print(f(print(1)))\n"})
    try:
        result = box.apply_action(workspace, {"pattern": "print($A)", "rewrite": "log($A)", "language": "python"})
    finally:
        box.cleanup(workspace)
    assert result.matches == 2
    assert "+log(f(print(1)))" in result.diff


def test_no_match_is_a_valid_action_with_an_empty_diff(box, workspace):
    result = box.apply_action(workspace, {"pattern": "nothing_like_this($A)", "rewrite": "x", "language": "python"})
    assert result.valid and result.exit_code == 0
    assert result.matches == 0 and result.diff == "" and result.files_changed == []


def test_paths_restrict_the_rewrite(box):
    workspace = box.prepare_workspace("paths", SOURCES["python"])
    try:
        result = box.apply_action(workspace, {"pattern": "print($$$A)", "rewrite": "log($$$A)", "language": "python", "paths": ["src/util.py"]})
    finally:
        box.cleanup(workspace)
    assert result.files_changed == ["src/util.py"]


def test_hidden_and_ignored_files_are_rewritten_and_a_planted_sgconfig_is_ignored(box):
    files = {".hidden/a.py": "print(1)\n", "build/b.py": "print(2)\n", ".gitignore": "build/\n",
             "sgconfig.yml": "ruleDirs: [rules]\n", "rules/evil.yml": "id: evil\nlanguage: python\nrule: {pattern: print($A)}\nfix: evil($A)\n"}
    workspace = box.prepare_workspace("hidden", files)
    try:
        result = box.apply_action(workspace, {"pattern": "print($A)", "rewrite": "log($A)", "language": "python"})
    finally:
        box.cleanup(workspace)
    assert result.files_changed == [".hidden/a.py", "build/b.py"]
    assert "evil(" not in result.diff


def test_the_binding_and_the_cli_agree_on_a_rule_that_does_not_compile(box, workspace, tmp_path):
    action = {"id": "bad", "language": "python", "rule": {"patern": "print($A)"}, "fix": "x"}
    result = box.apply_action(workspace, action)
    assert not result.valid and "patern" in result.error
    (tmp_path / "rule.yml").write_text("id: bad\nlanguage: python\nrule: {patern: print($A)}\nfix: x\n")
    cli = subprocess.run([cli_binary(), "scan", "--rule", str(tmp_path / "rule.yml"), str(workspace)], capture_output=True, text=True)
    assert cli.returncode not in (0, 1) and "patern" in cli.stderr


@pytest.mark.parametrize("pattern", ["print(", "$A +"])
def test_a_pattern_that_does_not_parse_and_matches_nothing_is_invalid(box, workspace, tmp_path, pattern):
    result = box.apply_action(workspace, {"pattern": pattern, "rewrite": "log(", "language": "python"})
    assert not result.valid and "does not parse as python" in result.error and result.diff == "" and result.matches == 0
    cli = subprocess.run([cli_binary(), "run", "-p", pattern, "-l", "python", "."], cwd=tmp_path, capture_output=True, text=True)
    assert "Pattern contains an ERROR node" in cli.stderr  # the CLI's own verdict, which the result follows


@pytest.mark.parametrize("language,files,pattern", [
    ("java", {"A.java": "class A { int n = 1; }\n"}, "if ($C) { $$$ }"),
    ("java", {"A.java": "class A { int n = 1; }\n"}, "$X++"),
    ("java", {"A.java": "class A { int n = 1; }\n"}, "@Override"),
    ("python", {"a.py": "x = 1\n"}, "@$D"),
    ("typescript", {"a.ts": "let x = 1;\n"}, "private $F: $T"),
])
def test_a_pattern_the_cli_takes_that_matches_nothing_is_valid_as_the_cli_says(box, tmp_path, language, files, pattern):
    workspace = box.prepare_workspace("cli-takes", files)
    try:
        result = box.apply_action(workspace, {"pattern": pattern, "rewrite": "x", "language": language})
    finally:
        box.cleanup(workspace)
    cli = subprocess.run([cli_binary(), "run", "-p", pattern, "-l", language, "."], cwd=tmp_path, capture_output=True, text=True)
    assert cli.returncode == 1 and "ERROR" not in cli.stderr  # no match, and no warning about the pattern
    assert result.valid and result.matches == 0 and result.error is None  # the binding alone called it "does not parse"


def test_a_directory_not_made_by_prepare_workspace_is_refused_not_read_as_empty(box, tmp_path):
    (tmp_path / "app.py").write_text("print(1)\n")
    result = box.apply_action(tmp_path, {"pattern": "print($A)", "rewrite": "log($A)", "language": "python"})
    assert not result.valid and "prepare_workspace" in result.error
    assert (tmp_path / "app.py").read_text() == "print(1)\n"
