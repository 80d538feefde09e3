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
