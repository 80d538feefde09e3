"""`trajforge.cli.main.main`: the boundary every `trajforge` command passes (the closed-pipe case runs in
tests/pipelines/test_lake_stats.py, over a real build)."""

from __future__ import annotations

import pytest

from trajforge.cli import main


def test_a_broken_pipe_of_the_commands_own_is_shown_not_taken_for_a_reader_gone(monkeypatch):
    import trajforge.cli.stats_cmd

    def broken_child_pipe(args):
        raise BrokenPipeError(32, "Broken pipe")  # as writing to a child process that died would

    monkeypatch.setattr(trajforge.cli.stats_cmd, "run_command", broken_child_pipe)
    with pytest.raises(BrokenPipeError):
        main.main(["stats"])


MODULE_PRINTING = """
from trajforge.cli.common import module_main

def run_command(args):
    for number in range(100_000):
        print(f"line {number}")
    return 0

raise SystemExit(module_main("pipelines.example", "prints many lines", lambda parser: None, lambda args: (), run_command))
"""


def test_a_python_m_command_ends_quietly_when_its_reader_leaves_and_130_on_ctrl_c(capsys):
    """`python -m learner.train ... | head -2` (what `ray job submit` runs) ends as `trajforge train | head -2` does."""
    import subprocess
    import sys
    from pathlib import Path

    from trajforge.cli.common import module_main

    process = subprocess.Popen([sys.executable, "-c", MODULE_PRINTING], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[2])
    process.stdout.close()
    errors = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141 and errors == ""

    def interrupted(args):
        raise KeyboardInterrupt

    assert module_main("pipelines.example", "doc", lambda parser: None, lambda args: (), interrupted, []) == 130


def test_python_m_help_wraps_a_one_line_epilog_and_keeps_a_docstrings_lines(capsys, monkeypatch):
    from trajforge.cli.common import module_main

    monkeypatch.setenv("COLUMNS", "200")
    epilog = "A run writes its folder and prints its metrics. " * 6
    description = "First line of a docstring.\n\n    an indented example line that stays as written"

    def add_arguments(parser):
        parser.epilog = epilog

    with pytest.raises(SystemExit):
        module_main("pipelines.example", description, add_arguments, lambda args: (), lambda args: 0, ["--help"])
    shown = capsys.readouterr().out
    assert "\n    an indented example line that stays as written\n" in shown
    tail = shown[shown.index("A run writes"):].splitlines()
    assert len(tail) > 1 and all(len(line) <= 100 for line in tail)
    assert " ".join(tail).split() == epilog.split()


def _parsers(parser, path):
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, [*path, name])


def test_every_command_and_verb_says_what_it_does_and_every_argument_has_a_help_text():
    """`trajforge queue status --help` showed no description and a bare `name` (so did put and drop)."""
    import argparse

    from trajforge.cli.main import build_parser

    missing = []
    for path, parser in _parsers(build_parser(), ["trajforge"]):
        if len(path) > 1 and not parser.description:
            missing.append(f"{' '.join(path)}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):  # each of its choices has the help instead
                missing += [f"{' '.join(path)} {choice.dest}: no help" for choice in action._choices_actions if not choice.help]
            elif not action.help and not isinstance(action, argparse._HelpAction):
                missing.append(f"{' '.join(path)}: {action.option_strings or action.dest} has no help")
    assert not missing, missing


@pytest.mark.parametrize(("argv", "who"), [
    (["stats", "--bogus"], "trajforge stats"),
    (["lake", "info", "--bogus", "x"], "trajforge lake info"),
    (["synth-records", "list", "--bogus"], "trajforge synth-records list"),
])
def test_an_unknown_argument_is_refused_with_the_usage_of_the_command_it_was_given_to(capsys, argv, who):
    """It showed the usage of `trajforge` itself (`trajforge [-h] [--version] COMMAND ...`), not of the command."""
    from trajforge.cli.main import main

    with pytest.raises(SystemExit) as refused:
        main(argv)
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.startswith(f"usage: {who} ") and f"{who}: error: unrecognized arguments: --bogus" in err, err
