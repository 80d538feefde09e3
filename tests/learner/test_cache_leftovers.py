"""The Arrow cache after a killed cache build: its half-written temporary folder is removed at the next start,
a folder another process is still filling is not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sft_builds import rows, write_build

import learner.sources as sources
from learner.sources import open_split, prepare_source
from trajforge.lake import Lake

REPO = Path(__file__).resolve().parents[2]
CACHE_AND_HANG = """
import sys, time
from pathlib import Path
import learner.sources as sources
from trajforge.lake import Lake

real = sources._batches

def batches_then_hang(build_dir, entries):
    for batch in real(build_dir, entries):
        yield batch
        print("writing", flush=True)  # the first batch is in the temporary folder's Arrow files
        time.sleep(600)

sources._batches = batches_then_hang
sources.prepare_source(Lake.at(sys.argv[1]), "b1", 1.0, Path(sys.argv[2]))
"""


def _killed_midway(lake: Path, cache: Path) -> list[Path]:
    """Run a cache build of b1 in another process, SIGKILL it while it writes; the folders it left in `cache`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CACHE_AND_HANG, str(lake), str(cache)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.kill()
        child.wait(timeout=30)
        child.stdout.close()
    return sorted(cache.iterdir())


def test_a_killed_cache_build_leaves_nothing_behind_at_the_next_start(tmp_path, caplog):
    write_build(tmp_path / "lake", "b1", rows(12, dev=3), files=2)
    cache = tmp_path / "cache"
    [leftover] = _killed_midway(tmp_path / "lake", cache)
    assert leftover.name.startswith(".b1-") and (leftover / "train.arrow").is_file()  # what the kill left
    (cache / ".notes").write_text("not a cache folder\n")
    with caplog.at_level("WARNING", logger="learner.sources"):
        source = prepare_source(Lake.at(tmp_path / "lake"), "b1", 1.0, cache)
    assert sorted(path.name for path in cache.iterdir()) == [".notes", Path(source.cache_dir).name]
    assert leftover.name in caplog.text and "killed" in caplog.text
    assert (source.train_rows, source.dev_rows) == (9, 3) and open_split(source, "dev").num_rows == 3


def test_a_folder_another_process_is_filling_is_left_alone(tmp_path, caplog):
    write_build(tmp_path / "lake", "b1", rows(6, dev=2))
    cache = tmp_path / "cache"
    cache.mkdir()
    live, lock = sources._staging(cache / "b1-0123456789ab")  # as a live `_write_cache` holds it
    try:
        (live / "train.arrow").write_bytes(b"half")
        with caplog.at_level("WARNING", logger="learner.sources"):
            source = prepare_source(Lake.at(tmp_path / "lake"), "b1", 1.0, cache)
            assert sources.remove_dead_staging(cache) == []
        assert (live / "train.arrow").read_bytes() == b"half" and "removed" not in caplog.text
        assert sorted(cache.iterdir()) == sorted([live, Path(source.cache_dir)])
    finally:
        os.close(lock)
    assert sources.remove_dead_staging(cache) == [live.name]  # once its writer is gone (its lock released)
    assert sorted(cache.iterdir()) == [Path(source.cache_dir)]
