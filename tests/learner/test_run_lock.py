"""A second `trajforge train` into a run folder that a run trains in is refused before it touches the run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from learner.run_lock import LOCK_FILE, run_lock
from learner.settings import LearnerSettings
from learner.train import launch
from trajforge.errors import TrajforgeError


def settings(tmp_path) -> LearnerSettings:
    return LearnerSettings.model_validate({"output_dir": str(tmp_path / "runs"), "run_name": "sft", "data": {"lake": str(tmp_path / "no-lake")}})


def test_a_second_start_into_a_running_runs_folder_is_refused_before_it_reads_or_changes_anything(tmp_path):
    run_dir = tmp_path / "runs" / "sft"
    with run_lock(run_dir):
        (run_dir / "checkpoint_manager_snapshot.json").write_text("{}")  # Ray Train's record, which a start removes
        with pytest.raises(TrajforgeError, match=rf"^run {run_dir} is in use: another `trajforge train` \(pid \d+ on .*\) trains it now"):
            launch(settings(tmp_path), echo=False)
        assert (run_dir / "checkpoint_manager_snapshot.json").is_file()
    with pytest.raises(TrajforgeError, match="no-lake"):  # released: the start goes on (here to the missing lake)
        launch(settings(tmp_path), echo=False)


def test_a_killed_drivers_lock_is_gone_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; from learner.run_lock import run_lock\n"
                               "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(TrajforgeError, match="is in use"), run_lock(tmp_path):
        pass
    holder.kill()
    holder.wait()
    holder.stdout.close()
    with run_lock(tmp_path):
        assert "pid " in (tmp_path / LOCK_FILE).read_text()
