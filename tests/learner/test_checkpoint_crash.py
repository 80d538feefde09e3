"""What a learner killed mid-write leaves: checkpoints (saved, saved again, pruned) and the Hugging Face export.
A fake engine stands in for DeepSpeed, so no Ray and no training here."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch.distributed as dist

from learner import checkpoint
from trajforge import atomic
from trajforge.errors import TrajforgeError

SHARDS = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt")


class FakeEngine:
    def save_checkpoint(self, save_dir: str, tag: str, client_state: dict) -> None:
        for name in SHARDS:
            (Path(save_dir) / tag).mkdir(parents=True, exist_ok=True)
            (Path(save_dir) / tag / name).write_bytes(b"shard " * 100)

    def zero_optimization_partition_weights(self) -> bool:
        return False

    class module:  # noqa: N801 - DeepSpeed's attribute name
        @staticmethod
        def state_dict() -> dict:
            return {"causal_lm.weight": 1}


class FakeModel:
    def __init__(self, fail: bool = False):
        self.fail = fail

    def save_pretrained(self, path: str, **kwargs) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "config.json").write_text("{}")
        (Path(path) / "model.safetensors").write_bytes(b"weights")
        if self.fail:
            raise KeyboardInterrupt("killed while saving")


@pytest.fixture
def single_worker(monkeypatch):
    monkeypatch.setattr(dist, "barrier", lambda: None)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)


@pytest.fixture
def events(monkeypatch) -> list[tuple[str, Path]]:
    """The files trajforge.atomic fsyncs and the renames, in order."""
    found: list[tuple[str, Path]] = []
    real_replace = os.replace
    monkeypatch.setattr(atomic, "fsync_file", lambda path: found.append(("fsync", Path(path))))
    monkeypatch.setattr(os, "replace", lambda src, dst: (found.append(("replace", Path(dst))), real_replace(src, dst))[1])
    return found


def test_the_shards_are_fsynced_before_the_state_file_marks_the_checkpoint_complete(tmp_path, single_worker, events):
    folder = checkpoint.save(FakeEngine(), tmp_path, 4, {"step": 4}, keep=2)
    marked = events.index(("replace", folder / checkpoint.STATE_FILE))
    assert {("fsync", folder / name) for name in SHARDS} <= set(events[:marked])
    state = checkpoint.read_state(folder)
    assert checkpoint.complete_checkpoints(tmp_path) == [folder] and state["step"] == 4
    assert state["files"] == {name: (folder / name).stat().st_size for name in SHARDS}  # what `check_resume` compares


def test_a_kill_while_pruning_leaves_no_broken_checkpoint_that_looks_complete(tmp_path, single_worker, monkeypatch):
    old = checkpoint.save(FakeEngine(), tmp_path, 4, {"step": 4}, keep=1)

    def killed_rmtree(path, ignore_errors=False):
        (Path(path) / SHARDS[0]).unlink()
        raise KeyboardInterrupt("killed while removing the old checkpoint")

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed_rmtree)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(FakeEngine(), tmp_path, 8, {"step": 8}, keep=1)
    assert not (old / SHARDS[0]).exists()
    assert checkpoint.complete_checkpoints(tmp_path) == [tmp_path / "checkpoints" / "step-000008"]  # resume takes step 8, not the torn 4


def test_a_kill_while_saving_over_an_earlier_save_of_the_same_step_leaves_it_incomplete(tmp_path, single_worker, monkeypatch):
    folder = checkpoint.save(FakeEngine(), tmp_path, 8, {"step": 8}, keep=2)  # then a resume from an earlier checkpoint

    def killed_save(save_dir, tag, client_state):
        (Path(save_dir) / tag / SHARDS[0]).write_bytes(b"half")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(FakeEngine, "save_checkpoint", staticmethod(killed_save))
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(FakeEngine(), tmp_path, 8, {"step": 8}, keep=2)
    assert checkpoint.complete_checkpoints(tmp_path) == [] and not (folder / checkpoint.STATE_FILE).exists()


def test_the_next_save_removes_the_shards_of_an_older_save_a_kill_interrupted(tmp_path, single_worker):
    torn = tmp_path / "checkpoints" / "step-000004"
    torn.mkdir(parents=True)
    (torn / SHARDS[0]).write_bytes(b"half")  # a save killed before its state file
    later = tmp_path / "checkpoints" / "step-000012"
    later.mkdir()
    (later / SHARDS[0]).write_bytes(b"half")  # a later step's torn save (a crashed run this one resumed before): overwritten when reached
    folder = checkpoint.save(FakeEngine(), tmp_path, 8, {"step": 8}, keep=2)
    assert not torn.exists() and later.exists()
    assert checkpoint.complete_checkpoints(tmp_path) == [folder]


def test_a_kill_during_the_export_keeps_the_previous_one_and_an_export_is_fsynced_before_it_appears(tmp_path, single_worker, events):
    target = tmp_path / "hf"
    checkpoint.export_hf(FakeEngine(), FakeModel(), FakeModel(), target, {"step": 4})
    appeared = events.index(("replace", target))
    [staging] = {path.parent for kind, path in events[:appeared] if kind == "fsync" and path.parent.name.startswith(f".hf.new-{socket.gethostname()}-{os.getpid()}-")}
    assert {("fsync", staging / name) for name in ("config.json", "model.safetensors", checkpoint.EXPORT_FILE)} <= set(events[:appeared])
    assert json.loads((target / checkpoint.EXPORT_FILE).read_text()) == {"step": 4}

    with pytest.raises(KeyboardInterrupt):
        checkpoint.export_hf(FakeEngine(), FakeModel(), FakeModel(fail=True), target, {"step": 8})
    assert json.loads((target / checkpoint.EXPORT_FILE).read_text()) == {"step": 4}  # the previous export, whole
    assert [path.name for path in tmp_path.iterdir()] == ["hf"]  # the failed export's temporary folder is gone


@pytest.mark.parametrize(("damage", "named"), [
    (lambda folder: (folder / SHARDS[1]).write_bytes(b"shard"), f"{SHARDS[1]} has 5 bytes, its save wrote 600"),
    (lambda folder: (folder / SHARDS[0]).unlink(), f"{SHARDS[0]} is missing"),
    (lambda folder: (folder / checkpoint.STATE_FILE).write_text("{not json"), f"its {checkpoint.STATE_FILE} cannot be read (JSONDecodeError"),
], ids=["truncated-shard", "missing-shard", "unreadable-state"])
def test_a_checkpoint_damaged_since_its_save_is_named_before_the_workers_load_it(tmp_path, single_worker, damage, named):
    earlier = checkpoint.save(FakeEngine(), tmp_path, 2, {"step": 2}, keep=2)
    latest = checkpoint.save(FakeEngine(), tmp_path, 4, {"step": 4}, keep=2)
    checkpoint.check_resume(tmp_path, "auto")  # whole: nothing to say
    damage(latest)
    with pytest.raises(TrajforgeError) as raised:
        checkpoint.check_resume(tmp_path, "auto")
    assert str(raised.value).startswith(f"learner.resume=auto: the run's latest checkpoint {latest} is damaged: {named}")
    assert str(raised.value).endswith(f"restore it, or go on from the checkpoint before it with learner.resume={earlier} (or remove {latest})")
    checkpoint.check_resume(tmp_path, str(earlier))  # the way on that it names
    with pytest.raises(TrajforgeError, match=rf"^learner.resume={latest}: checkpoint {latest} is damaged: "):
        checkpoint.check_resume(tmp_path, str(latest))
    damage(earlier)
    with pytest.raises(TrajforgeError, match=r"restore it, or start the run over with learner.resume=never$"):
        checkpoint.check_resume(tmp_path, "auto")


def test_a_checkpoint_saved_before_the_state_file_listed_its_files_still_resumes(tmp_path, single_worker):
    folder = checkpoint.save(FakeEngine(), tmp_path, 2, {"step": 2}, keep=2)
    (folder / checkpoint.STATE_FILE).write_text('{"step": 2}')
    (folder / SHARDS[0]).write_bytes(b"")  # nothing to compare it with
    checkpoint.check_resume(tmp_path, "auto")
