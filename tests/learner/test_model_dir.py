"""What the driver checks before any worker starts: a model folder the workers could not train, a resume folder
that is no checkpoint, a schedule that never leaves its warmup; and the checkpoints and export of a history a start replaces."""

from __future__ import annotations

import json
import shutil

import pytest
from sft_builds import rows, write_build

from learner.settings import LearnerSettings
from learner.train import prepare
from trajforge.errors import ConfigError, TrajforgeError


@pytest.fixture
def lake(tmp_path):
    write_build(tmp_path / "lake", "b1", rows(4, dev=1))
    return tmp_path / "lake"


def settings_for(lake, model, **more) -> LearnerSettings:
    return LearnerSettings.model_validate({"model": str(model), "data": {"lake": str(lake), "cache_dir": str(lake.parent / "cache")},
                                           "output_dir": str(lake.parent / "runs"), **more}).absolute()


@pytest.fixture
def model_copy(tiny_model, tmp_path):
    return shutil.copytree(tiny_model, tmp_path / "model")


def test_a_complete_model_folder_is_accepted(lake, model_copy):
    assert prepare(settings_for(lake, model_copy))["model_dir"] == str(model_copy)


def test_a_model_folder_that_does_not_exist_says_nothing_downloads_it(lake, tmp_path):
    with pytest.raises(ConfigError, match=r"learner\.model: .*Qwen3-14B does not exist; .*hf download Qwen/Qwen3-14B"):
        prepare(settings_for(lake, tmp_path / "Qwen" / "Qwen3-14B"))


def test_a_model_without_a_chat_template_is_refused_before_the_workers(lake, model_copy):
    (model_copy / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer_config = json.loads((model_copy / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (model_copy / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    with pytest.raises(ConfigError, match=r"learner\.model: .* has no chat template"):
        prepare(settings_for(lake, model_copy))


def test_a_model_without_weights_is_refused_before_the_workers(lake, model_copy):
    for weights in model_copy.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ConfigError, match=r"learner\.model: .* has no weights"):
        prepare(settings_for(lake, model_copy))


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_truncated_or_damaged_weights_file_is_named_before_the_workers(lake, model_copy, damage):
    """The workers failed a minute later with "training failed: SafetensorError: ... header too large", naming no file."""
    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"garbage" * 3)
    with pytest.raises(ConfigError, match=r"learner\.model: .*model\.safetensors is not a complete safetensors file .*copy or download the checkpoint again"):
        prepare(settings_for(lake, model_copy))


def test_a_tokenizer_config_without_its_vocabulary_is_refused_before_the_workers(lake, model_copy):
    """The workers failed with "You need to have sentencepiece or tiktoken installed to convert a slow tokenizer"."""
    (model_copy / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match=r"learner\.model: .* has a tokenizer_config\.json but no vocabulary \(tokenizer\.json"):
        prepare(settings_for(lake, model_copy))


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_a_truncated_tokenizer_file_is_named_before_the_workers(lake, model_copy, name):
    """The workers failed after they started with "training failed: JSONDecodeError: Expecting value: line 291 column 12",
    naming no file."""
    tokenizer_file = model_copy / name
    tokenizer_file.write_bytes(tokenizer_file.read_bytes()[:200])
    with pytest.raises(ConfigError, match=rf"learner\.model: .*{name} cannot be read \(.*\): the copy is truncated or damaged"):
        prepare(settings_for(lake, model_copy))


def test_a_tokenizer_json_whose_merges_name_tokens_outside_its_vocabulary_is_named(lake, model_copy):
    tokenizer_file = model_copy / "tokenizer.json"
    tokenizer = json.loads(tokenizer_file.read_text())
    tokenizer["model"]["vocab"] = {}
    tokenizer_file.write_text(json.dumps(tokenizer))
    with pytest.raises(ConfigError, match=r"learner\.model: .*tokenizer\.json cannot be read \(.*out of vocabulary"):
        prepare(settings_for(lake, model_copy))


def test_a_model_whose_config_transformers_cannot_read_is_refused(lake, model_copy):
    (model_copy / "config.json").write_text('{"model_type": "no-such-model"}')
    with pytest.raises(ConfigError, match=r"learner\.model: .*config\.json cannot be read"):
        prepare(settings_for(lake, model_copy))


def test_a_resume_folder_that_is_no_checkpoint_is_refused_before_the_workers(lake, model_copy, tmp_path):
    with pytest.raises(ConfigError, match=r"learner\.resume: .*not-a-checkpoint is not a complete learner checkpoint"):
        prepare(settings_for(lake, model_copy, resume=str(tmp_path / "not-a-checkpoint")))


def test_a_runs_latest_checkpoint_with_a_truncated_shard_is_refused_before_the_workers(lake, model_copy):
    folder = lake.parent / "runs" / "sft" / "checkpoints" / "step-000004"
    folder.mkdir(parents=True)
    (folder / "zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes(b"x" * 10)
    (folder / "trajforge_state.json").write_text(json.dumps({"step": 4, "files": {"zero_pp_rank_1_mp_rank_00_optim_states.pt": 1000}}))
    with pytest.raises(TrajforgeError, match=r"^learner.resume=auto: the run's latest checkpoint .*step-000004 is damaged: "
                                             r"zero_pp_rank_1_mp_rank_00_optim_states.pt has 10 bytes, its save wrote 1000; "):
        prepare(settings_for(lake, model_copy))


def test_a_warmup_as_long_as_the_run_is_warned_about(lake, model_copy, caplog):
    with caplog.at_level("WARNING", logger="learner.train"):
        prepare(settings_for(lake, model_copy, optim={"warmup_steps": 10}, train={"max_steps": 5}))
    assert "learner.optim.warmup_steps (10) is not below learner.train.max_steps (5)" in caplog.text
    caplog.clear()
    prepare(settings_for(lake, model_copy, optim={"warmup_steps": 4}, train={"max_steps": 5}))
    assert "warmup_steps" not in caplog.text


def _checkpoints(run_dir, *steps):
    from learner.checkpoint import STATE_FILE, tag

    for step in steps:
        folder = run_dir / "checkpoints" / tag(step)
        folder.mkdir(parents=True)
        (folder / STATE_FILE).write_text(json.dumps({"step": step}))
    return run_dir / "checkpoints"


def test_starting_a_run_over_removes_its_checkpoints_of_the_replaced_history(lake, model_copy, caplog):
    """They outlived the new run's checkpoints in the pruning by name (keep 1 deleted the step-2 save just made and kept
    the old step-4 one), and a later `auto` start resumed from the old history."""
    from learner.checkpoint import complete_checkpoints
    from learner.train import remove_superseded_history

    settings = settings_for(lake, model_copy, resume="never")
    root = _checkpoints(settings.run_dir, 2, 4)
    with caplog.at_level("WARNING", logger="learner.train"):
        assert [path.name for path in remove_superseded_history(settings)] == ["step-000002", "step-000004"]
    assert "removing its later checkpoints step-000002, step-000004" in caplog.text
    assert complete_checkpoints(settings.run_dir) == [] and not list(root.glob("step-*"))


def test_resuming_from_an_earlier_checkpoint_removes_only_the_later_ones(lake, model_copy):
    from learner.checkpoint import complete_checkpoints
    from learner.train import remove_superseded_history

    root = _checkpoints(settings_for(lake, model_copy).run_dir, 2, 4, 6)
    assert [path.name for path in remove_superseded_history(settings_for(lake, model_copy, resume=str(root / "step-000004")))] == ["step-000006"]
    assert [path.name for path in complete_checkpoints(settings_for(lake, model_copy).run_dir)] == ["step-000002", "step-000004"]
    assert remove_superseded_history(settings_for(lake, model_copy)) == []  # auto resumes from the latest: nothing is later


def _export(run_dir, step):
    from learner.checkpoint import EXPORT_FILE

    export = run_dir / "hf"
    export.mkdir(parents=True)
    (export / "config.json").write_text("{}")
    (export / EXPORT_FILE).write_text(json.dumps({"step": step}))
    return export


def test_starting_a_run_over_removes_the_replaced_historys_export(lake, model_copy, caplog):
    """Until the new run's end, a reader of <run>/hf took the old run's model for the new one's."""
    from learner.train import remove_superseded_history

    settings = settings_for(lake, model_copy, resume="never")
    _checkpoints(settings.run_dir, 8)
    export = _export(settings.run_dir, 8)
    with caplog.at_level("WARNING", logger="learner.train"):
        assert remove_superseded_history(settings)[-1] == export
    assert f"removing its Hugging Face export {export} (of step 8), the replaced history's model" in caplog.text
    assert not export.exists()


def test_resuming_from_an_earlier_checkpoint_removes_a_later_export_and_keeps_one_of_that_step(lake, model_copy):
    from learner.train import remove_superseded_history

    root = _checkpoints(settings_for(lake, model_copy).run_dir, 4, 8)
    export = _export(settings_for(lake, model_copy).run_dir, 8)
    assert remove_superseded_history(settings_for(lake, model_copy, resume=str(root / "step-000008"))) == []  # the same step's model
    assert remove_superseded_history(settings_for(lake, model_copy)) == [] and export.exists()  # auto goes on with the history
    assert remove_superseded_history(settings_for(lake, model_copy, resume=str(root / "step-000004"))) == [root / "step-000008", export]
    assert not export.exists()
