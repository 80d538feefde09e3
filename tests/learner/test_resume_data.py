"""Resuming with other data settings than the checkpoint's is refused by the driver, naming them, before Ray starts."""

from __future__ import annotations

import hashlib
import json

import pytest
from sft_builds import rows, write_build

from learner.checkpoint import STATE_FILE, tag
from learner.resume_data import check_resume_data, data_record, data_signature
from learner.settings import LearnerSettings
from learner.sources import Source
from learner.train import prepare
from trajforge.errors import ConfigError


@pytest.fixture
def lake(tmp_path):
    write_build(tmp_path / "lake", "b1", rows(4, dev=1))
    return tmp_path / "lake"


def settings_for(lake, model, device: str = "cpu", seq_len: int = 256, accumulation: int = 8, **more) -> LearnerSettings:
    return LearnerSettings.model_validate({"model": str(model), "output_dir": str(lake.parent / "runs"),
                                           "data": {"lake": str(lake), "cache_dir": str(lake.parent / "cache"), "seq_len": seq_len},
                                           "train": {"gradient_accumulation_steps": accumulation},
                                           "workers": {"device": device, "count": 2}, **more}).absolute()


def b1(train_rows: int = 3) -> Source:
    return Source("b1", "/lake/curated/b1", 1.0, "/cache/b1", train_rows, 1)


def checkpoint_of(settings: LearnerSettings, step: int, *, world_size: int = 2, record: bool = True):
    """A checkpoint folder whose state is what the workers write (with or without the data record of newer versions)."""
    made = data_record(settings, [b1()], world_size)
    folder = settings.run_dir / "checkpoints" / tag(step)
    folder.mkdir(parents=True)
    state = {"step": step, "tokens_seen": 0, "cursor": {}, "data_signature": data_signature(made), **({"data": made} if record else {})}
    (folder / STATE_FILE).write_text(json.dumps(state))
    return folder


def test_resuming_with_another_seq_len_is_refused_naming_it_before_ray_starts(lake, tiny_model):
    checkpoint_of(settings_for(lake, tiny_model), 4)
    with pytest.raises(ConfigError) as refused:
        prepare(settings_for(lake, tiny_model, seq_len=512))
    text = str(refused.value)
    assert "learner.resume=auto: the run's latest checkpoint" in text and "step-000004 was made with other data settings" in text
    assert "learner.data.seq_len was 256, is now 512" in text and "learner.resume=never" in text and "\n" not in text
    assert "builds" not in text  # only what differs is named


def test_resuming_with_the_same_data_settings_goes_ahead(lake, tiny_model):
    checkpoint_of(settings_for(lake, tiny_model), 4)
    prepare(settings_for(lake, tiny_model))


def test_a_named_checkpoint_folder_with_other_builds_is_refused(lake, tiny_model):
    folder = checkpoint_of(settings_for(lake, tiny_model), 2)
    state = json.loads((folder / STATE_FILE).read_text())
    state["data"]["builds"] = [{"build_id": "b0", "weight": 1.0, "train_rows": 40}]
    (folder / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(ConfigError, match=r"learner\.resume=/.*step-000002 was made with other data settings.*learner\.data\.builds was "
                                          r"\[b0 \(weight 1, 40 train rows\)\], is now \[b1 \(weight 1, 3 train rows\)\]"):
        prepare(settings_for(lake, tiny_model, resume=str(folder)))


def test_other_rows_per_step_are_refused_before_ray_when_the_worker_count_is_settled(lake, tiny_model, monkeypatch):
    checkpoint_of(settings_for(lake, tiny_model), 4)
    with pytest.raises(ConfigError, match=r"the rows per step \(learner\.train\.micro_batch_size x gradient_accumulation_steps x workers\) "
                                          r"was 16, is now 8"):
        prepare(settings_for(lake, tiny_model, accumulation=4))
    # `auto` with a cluster still to join may lower the count: compared once Ray says how many workers there are
    monkeypatch.setattr("learner.device_check.gpus_before_joining", lambda: None)
    settings = settings_for(lake, tiny_model, device="auto", accumulation=4)
    prepare(settings)
    with pytest.raises(ConfigError, match=r"was 16, is now 8"):
        check_resume_data(settings, [b1()], world_size=2)
    check_resume_data(settings, [b1()], world_size=4)  # 1 x 4 x 4: the same rows per step


def test_a_checkpoint_with_only_the_digest_is_checked_by_it(lake, tiny_model):
    """Checkpoints made before the data record: what differs cannot be named, that something does can."""
    checkpoint_of(settings_for(lake, tiny_model), 4, record=False)
    check_resume_data(settings_for(lake, tiny_model), [b1()], world_size=2)
    check_resume_data(settings_for(lake, tiny_model, seq_len=512), [b1()], world_size=None)  # needs the worker count
    with pytest.raises(ConfigError, match=r"one of learner\.data\.builds, seq_len, window, seed or the rows per step .* records only their digest"):
        check_resume_data(settings_for(lake, tiny_model, seq_len=512), [b1()], world_size=2)


def test_the_digest_is_the_one_older_checkpoints_carry(lake, tiny_model):
    record = data_record(settings_for(lake, tiny_model), [b1()], 2)
    older = hashlib.sha256(json.dumps([[("b1", 1.0, 3)], 256, 1024, 0, 16]).encode()).hexdigest()[:16]
    assert data_signature(record) == older
