"""An empty `--lake` (`--lake "$LAKE"` with the variable unset) is a usage error, not the folder the command runs in."""

from __future__ import annotations

import pytest

from trajforge.cli.main import main


@pytest.mark.parametrize("argv", [
    ["forget", "0123456789abcdef0123456789abcdef"], ["stats"], ["lake", "info"], ["lake", "pull", "file:///nowhere"],
    ["lake", "sync", "file:///nowhere"], ["lake", "publish", "latest", "file:///nowhere"], ["build"], ["serve"], ["demo"],
    ["provenance", "--build", "latest", "--commit", "abcd"], ["synth-rules"], ["teacher"], ["datasets"], ["synth-records", "list"],
    ["train"], ["rollout"],
])
def test_an_empty_lake_is_refused_and_nothing_is_written(argv, capsys, tmp_path, monkeypatch):
    """`trajforge forget ID --lake ""` wrote its tombstone into ./raw/tombstones/ and said it was done: the lake the builds
    read never got it; `lake pull URI --lake ""` would have put the raw lake's files into the folder it ran in."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as refused:
        main([*argv, "--lake", ""])
    assert refused.value.code == 2
    assert "error: argument --lake: must not be empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["build", "--publish-to", ""], ["provenance", "--commit", "abcd", "--build", ""], ["stats", "--build", ""]])
def test_an_empty_uri_or_build_is_refused_too(argv, capsys, tmp_path, monkeypatch):
    """`trajforge build --publish-to "$URI"` with the variable unset built and published nothing, without a word; `provenance
    --build ""` asked the service instead of a build."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2 and f"error: argument {argv[-2]}: must not be empty" in capsys.readouterr().err
