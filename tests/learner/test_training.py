"""Training through Ray Train with 2 CPU workers (DeepSpeed ZeRO-3 on its CPU accelerator, gloo): overfitting, resume, export."""

from __future__ import annotations

import json

import pytest
from sft_builds import rows, write_build

from learner.metrics import read_metrics
from learner.settings import LearnerSettings
from learner.train import launch

MAX_STEPS = 8
STOP_AT = 4


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("learner-lake")
    write_build(root, "tiny", rows(6, dev=2, seed=11))  # 4 train rows: a set small enough to overfit in a few steps
    return root


def settings_for(tiny_model, lake, output_dir, name: str, **train) -> LearnerSettings:
    return LearnerSettings.model_validate({
        "model": str(tiny_model), "output_dir": str(output_dir), "run_name": name,
        "data": {"lake": str(lake), "seq_len": 256, "window": 3},
        "optim": {"lr": 1e-2, "warmup_steps": 1, "min_lr_ratio": 0.1},
        "train": {"max_steps": MAX_STEPS, "micro_batch_size": 1, "gradient_accumulation_steps": 2, "loss_chunk_tokens": 50, **train},
        "eval": {"every_steps": 4, "max_sequences": 4},
        "checkpoint": {"every_steps": 4, "keep": 1},
        "workers": {"count": 2, "device": "cpu", "cpus_per_worker": 0.05, "start_timeout_s": 120},
    })


@pytest.fixture(scope="module")
def full_run(ray_cluster, tiny_model, lake, tmp_path_factory):
    output = tmp_path_factory.mktemp("learner-runs")
    return launch(settings_for(tiny_model, lake, output, "full"), echo=False)


def test_loss_decreases_when_overfitting_a_tiny_set(full_run):
    losses = [loss for _, loss in full_run["loss"]]
    assert full_run["finished"] and len(losses) == MAX_STEPS
    assert losses[-1] < 0.6 * losses[0]
    evals = [loss for _, loss in full_run["eval_loss"]]
    assert len(evals) == 2 and evals[-1] < evals[0]


def test_metrics_lines_and_tensorboard(full_run):
    from pathlib import Path

    run_dir = Path(full_run["run_dir"])
    train = read_metrics(run_dir, "train")
    assert {"loss", "lr", "tokens_per_s", "mfu", "memory_gb", "grad_norm"} <= set(train[0])
    assert all(line["tokens_per_s"] > 0 and 0 < line["mfu"] < 1 and line["memory_gb"] > 0 for line in train)
    assert train[0]["lr"] == pytest.approx(1e-2)  # one warmup step, then the cosine
    assert train[-1]["lr"] < train[1]["lr"]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    saved = json.loads((run_dir / "learner_config.json").read_text())
    assert saved["settings"]["train"]["max_steps"] == MAX_STEPS and saved["sources"][0]["build_id"] == "tiny"


def test_stopping_and_resuming_reproduces_the_uninterrupted_run_and_skips_an_interrupted_save(ray_cluster, tiny_model, lake, full_run, tmp_path,
                                                                                             caplog):
    with caplog.at_level("WARNING", logger="learner.train"):
        stopped = launch(settings_for(tiny_model, lake, tmp_path, "cut", stop_after_steps=STOP_AT), echo=False)
    assert stopped["finished"] is False and stopped["step"] == STOP_AT and stopped["export"] is None
    assert (f"run cut stopped at step {STOP_AT} of {MAX_STEPS} (learner.train.stop_after_steps), with no Hugging Face export; the same command "
            f"resumes the run from its last checkpoint, {stopped['checkpoints'][-1]} (with --set learner.train.max_steps={STOP_AT} it exports") in caplog.text
    interrupted = tmp_path / "cut" / "checkpoints" / f"step-{STOP_AT + 2:06d}"  # a save killed before its state file was written
    interrupted.mkdir()
    (interrupted / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"half a file")
    resumed = launch(settings_for(tiny_model, lake, tmp_path, "cut"), echo=False)
    assert resumed["finished"] and resumed["step"] == MAX_STEPS
    starts = read_metrics(tmp_path / "cut", "start")
    assert [line["resumed"] for line in starts] == [False, True]
    uninterrupted = dict(full_run["loss"])
    continued = dict(resumed["loss"])
    assert sorted(continued) == list(range(1, MAX_STEPS + 1))  # one continuous curve in metrics.jsonl
    for step in range(STOP_AT + 1, MAX_STEPS + 1):
        assert continued[step] == pytest.approx(uninterrupted[step], abs=1e-4)
    assert dict(resumed["eval_loss"])[MAX_STEPS] == pytest.approx(dict(full_run["eval_loss"])[MAX_STEPS], abs=1e-4)


def test_the_export_is_a_hugging_face_model_that_generates(full_run, tiny_model):
    from pathlib import Path

    import torch

    from learner.checkpoint import load_trained

    model, tokenizer = load_trained(full_run["export"])
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Task 1: parse"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    info = json.loads((Path(full_run["export"]) / "trajforge_export.json").read_text())
    assert info["step"] == MAX_STEPS and info["builds"] == ["tiny"]
    # the model's own config, not the training's (use_cache was saved as false: no KV cache for plain forward calls)
    assert json.loads((Path(full_run["export"]) / "config.json").read_text()) == json.loads((tiny_model / "config.json").read_text())


def test_a_run_starts_again_after_its_checkpoints_were_pruned(ray_cluster, tiny_model, lake, full_run, tmp_path):
    import shutil
    from pathlib import Path

    shutil.copytree(full_run["run_dir"], tmp_path / "full")  # keep 1: its step-4 checkpoint is gone, Ray Train's record still names it
    assert [path.name for path in (tmp_path / "full" / "checkpoints").glob("step-*")] == [f"step-{MAX_STEPS:06d}"]
    again = launch(settings_for(tiny_model, lake, tmp_path, "full", max_steps=MAX_STEPS + 1), echo=False)
    assert again["finished"] and again["step"] == MAX_STEPS + 1
    assert [line["step"] for line in read_metrics(Path(again["run_dir"]), "start")] == [0, MAX_STEPS]


def test_a_restart_after_a_worker_failure_goes_on_from_the_last_checkpoint_whatever_the_start(ray_cluster, tiny_model, lake, tmp_path,
                                                                                             monkeypatch):
    """With learner.resume=never, Ray Train's restart (workers.max_failures) started the run over from step 0."""
    failed_once = tmp_path / "failed-once"

    def fail_once_at_step_2(config):
        import learner.trainer as trainer

        train_step = trainer.Trainer.train_step

        def failing(self):
            if self.step == 1 and not failed_once.exists():
                if self.rank == 0:
                    failed_once.touch()
                raise RuntimeError("a worker died")
            return train_step(self)

        trainer.Trainer.train_step = failing
        return trainer.worker_main(config)

    monkeypatch.setattr("learner.trainer.worker_main", fail_once_at_step_2)
    base = settings_for(tiny_model, lake, tmp_path, "restarted", max_steps=3).model_dump(mode="json")
    settings = LearnerSettings.model_validate({**base, "resume": "never", "checkpoint": {"every_steps": 1, "keep": 1, "export_hf": False},
                                               "eval": {"every_steps": 0, "max_sequences": 1},
                                               "workers": {**base["workers"], "max_failures": 1}})
    summary = launch(settings, echo=False)
    assert failed_once.exists() and summary["finished"] and summary["step"] == 3
    assert [(line["step"], line["resumed"]) for line in read_metrics(tmp_path / "restarted", "start")] == [(0, False), (1, True)]


def test_resuming_a_real_checkpoint_with_other_data_settings_is_refused_before_any_worker(tiny_model, lake, full_run, tmp_path):
    import shutil
    from pathlib import Path

    from learner.checkpoint import complete_checkpoints, read_state
    from trajforge.errors import ConfigError

    shutil.copytree(full_run["run_dir"], tmp_path / "full")
    assert read_state(complete_checkpoints(tmp_path / "full")[-1])["data"]["seq_len"] == 256  # what the workers recorded
    base = settings_for(tiny_model, lake, tmp_path, "full", max_steps=MAX_STEPS + 1).model_dump(mode="json")
    changed = LearnerSettings.model_validate({**base, "data": {**base["data"], "seq_len": 128, "window": 4}})
    with pytest.raises(ConfigError, match=r"learner\.data\.seq_len was 256, is now 128; learner\.data\.window was 3, is now 4"):
        launch(changed, echo=False)
    assert (Path(tmp_path / "full") / "hf" / "config.json").is_file()  # a refused start removes nothing


def test_a_steps_loss_and_gradient_do_not_depend_on_how_its_rows_are_split(ray_cluster, tiny_model, lake, full_run, tmp_path):
    """The loss is the mean over every loss token of a step's 4 rows: 1 row x 2 accumulation steps x 2 workers (full_run) and
    4 rows x 1 x 1 worker give the same loss and the same gradient norm (before clipping), step after step."""
    from pathlib import Path

    base = settings_for(tiny_model, lake, tmp_path, "one-worker", micro_batch_size=4, gradient_accumulation_steps=1,
                        stop_after_steps=2).model_dump(mode="json")
    launch(LearnerSettings.model_validate({**base, "workers": {**base["workers"], "count": 1}}), echo=False)
    split = [line[key] for line in read_metrics(tmp_path / "one-worker", "train") for key in ("loss", "grad_norm", "loss_tokens")]
    whole = [line[key] for line in read_metrics(Path(full_run["run_dir"]), "train")[:2] for key in ("loss", "grad_norm", "loss_tokens")]
    assert len(split) == 6 and split == pytest.approx(whole, rel=1e-5)
