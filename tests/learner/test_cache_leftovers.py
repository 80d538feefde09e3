"""The Arrow cache after a killed cache build: its half-written temporary folder is removed at the next start,
a folder another process is still filling is not, and two caching the same build at once end with one folder."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sft_builds import rows, write_build

import learner.sources as sources
from learner.sources import open_split, prepare_source
from trajforge.atomic import staged_dir
from trajforge.lake import Lake

REPO = Path(__file__).resolve().parents[2]
CACHE_AND_HANG = """
import sys, time
from pathlib import Path
import learner.sources as sources
from trajforge.lake import Lake

real = sources._batches

def batches_then_hang(build_dir, entries, where=None):
    for batch in real(build_dir, entries, where):
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
    with caplog.at_level("WARNING", logger="trajforge.atomic"):
        source = prepare_source(Lake.at(tmp_path / "lake"), "b1", 1.0, cache)
    assert sorted(path.name for path in cache.iterdir()) == [".notes", Path(source.cache_dir).name]
    assert leftover.name in caplog.text and "killed" in caplog.text
    assert (source.train_rows, source.dev_rows) == (9, 3) and open_split(source, "dev").num_rows == 3


def test_a_folder_another_process_is_filling_is_left_alone(tmp_path, caplog):
    write_build(tmp_path / "lake", "b1", rows(6, dev=2))
    cache = tmp_path / "cache"
    with staged_dir(cache / "b1-0123456789ab") as live:  # as a live cache build holds it
        (live / "train.arrow").write_bytes(b"half")
        with caplog.at_level("WARNING", logger="trajforge.atomic"):
            source = prepare_source(Lake.at(tmp_path / "lake"), "b1", 1.0, cache)
        assert (live / "train.arrow").read_bytes() == b"half" and "removed" not in caplog.text
        assert sorted(cache.iterdir()) == sorted([live, Path(source.cache_dir)])
    assert sorted(path.name for path in cache.iterdir()) == sorted(["b1-0123456789ab", Path(source.cache_dir).name])


def test_two_processes_caching_the_same_build_at_once_both_use_the_first_ones_folder(tmp_path, monkeypatch):
    write_build(tmp_path / "lake", "b1", rows(8, dev=2))
    cache, both_writing = tmp_path / "cache", threading.Barrier(2, timeout=60)
    real = sources._batches

    def batches_side_by_side(build_dir, entries, where=None):
        both_writing.wait()  # each is filling its own temporary folder; neither is published yet
        yield from real(build_dir, entries, where)

    monkeypatch.setattr(sources, "_batches", batches_side_by_side)
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: prepare_source(Lake.at(tmp_path / "lake"), "b1", 1.0, cache), range(2))
    assert first == second and (first.train_rows, first.dev_rows) == (6, 2)
    assert [path.name for path in cache.iterdir()] == [Path(first.cache_dir).name]  # no temporary folder is left
