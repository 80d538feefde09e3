"""A first command typed wrong says what to type: the close command, verb, choice or option, and the commands there are."""

from __future__ import annotations

import pytest

from trajforge.cli.common import module_main


def refusal(capsys, argv: list[str]) -> str:
    from trajforge.cli.main import main

    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("argv", "said"), [
    (["buidl"], "trajforge: error: argument COMMAND: invalid choice: 'buidl': did you mean 'build'?"),
    (["srats", "--json"], "invalid choice: 'srats': did you mean 'stats'?"),
    (["lake", "snyc", "s3://b/lake"], "trajforge lake: error: argument VERB: invalid choice: 'snyc': did you mean 'sync'?"),
    (["synth-records", "rn"], "invalid choice: 'rn': did you mean 'run'?"),
    (["build", "--log-level", "debug"], "argument --log-level: invalid choice: 'debug': did you mean 'DEBUG'?"),
])
def test_a_misspelt_command_verb_or_choice_names_the_close_one(capsys, argv, said):
    assert said in refusal(capsys, argv)


@pytest.mark.parametrize("word", ["xyzzy", "ingest", "run", "test"])
def test_a_word_like_no_command_lists_them_without_a_guess(capsys, word):
    """`trajforge ingest` must not ask whether `forget` was meant."""
    err = refusal(capsys, [word])
    assert f"invalid choice: '{word}' (choose from 'serve', 'embed'," in err and "did you mean" not in err


def test_a_misspelt_option_names_the_close_one(capsys):
    err = refusal(capsys, ["stats", "--bild", "latest"])
    assert "trajforge stats: error: unrecognized arguments: --bild latest (--bild: did you mean --build?)" in err
    err = refusal(capsys, ["lake", "info", "--jsn", "--bulds=3"])
    assert "unrecognized arguments: --jsn --bulds=3 (--jsn: did you mean --json?; --bulds: did you mean --builds?)" in err


def test_a_command_given_without_its_command_or_verb_shows_the_help_that_lists_them(capsys):
    """`trajforge` alone printed only `usage: trajforge [-h] [--version] COMMAND ...`, naming no command."""
    err = refusal(capsys, [])
    assert "    build        build curated Parquet" in err and "    stats        print what a curated build holds" in err
    assert err.rstrip().endswith("trajforge: error: the following arguments are required: COMMAND")
    err = refusal(capsys, ["lake"])
    assert "    publish" in err and "    info " in err and err.rstrip().endswith("trajforge lake: error: the following arguments are required: VERB")


def test_python_m_entry_points_say_it_too(capsys):
    def add_arguments(parser):
        parser.add_argument("--lake", help="the lake")
        parser.add_argument("--stage", choices=["ingest", "process"], help="what to run")

    with pytest.raises(SystemExit) as refused:
        module_main("pipelines.example", "an example", add_arguments, lambda args: (), lambda args: 0, ["--stage", "procces"])
    assert refused.value.code == 2 and "invalid choice: 'procces': did you mean 'process'?" in capsys.readouterr().err
