"""Each trajforge command's `--help` ends with examples, and every example is a command line its parser takes."""

from __future__ import annotations

import argparse
import shlex

import pytest

from trajforge.cli.main import _parse, build_parser

WITH_EXAMPLES = ["serve", "embed", "sandbox", "build", "stats", "forget", "provenance", "lake", "queue", "dashboard", "demo", "datasets"]


def examples(parser: argparse.ArgumentParser) -> list[str]:
    """The example command lines of a help text: its lines that start with `trajforge`, without a leading variable or comment."""
    lines = []
    for line in parser.format_help().splitlines():
        words = line.split("#", 1)[0].split()
        while words and "=" in words[0] and not words[0].startswith("-"):
            words.pop(0)  # TRAJFORGE_TOKEN=sk_... trajforge ...
        if len(words) > 1 and words[0] == "trajforge":
            lines.append(" ".join(words))
    return lines


@pytest.mark.parametrize("command", WITH_EXAMPLES)
def test_a_commands_help_has_examples_its_parser_takes(command):
    """`trajforge serve --help` (and build, stats, embed, ...) named every option but showed no command line to start from."""
    parser = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)).choices[command]
    found = [line for line in examples(parser) if line.split()[1] == command]
    assert found, parser.format_help()
    for line in found:
        _parse(shlex.split(line)[1:])  # an unknown option or a missing argument is SystemExit: the example would not run
