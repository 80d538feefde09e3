"""The build's public-dataset sft rows (pipelines/build/dataset_rows.py) go through the learner unchanged: cached by
split, rendered by the model's chat template, the loss on the code after the change and nothing else."""

from __future__ import annotations

import hashlib

import numpy as np
from sft_builds import write_build

from learner.chat import IGNORE, ChatEncoder
from learner.sources import open_split, prepare_source
from learner.stream import PackedStream
from pipelines.build.dataset_rows import sft_row
from trajforge.lake import Lake

PROMPT = "You are a coding agent. Make the requested change to the code and reply with the complete code after the change."


def dataset_rows() -> list[dict]:
    edits = [("python", "Use sum() to total the cart", "def total(items):\n    result = 0\n    for i in items:\n        result += i\n    return result\n",
              "def total(items):\n    return sum(items)\n"),
             ("java", "Make the greeting final", "class A {\n  String g = \"hi\";\n}\n", "class A {\n  final String g = \"hi\";\n}\n"),
             ("typescript", "Add a timeout", "export async function get(url: string) {\n  return fetch(url);\n}\n",
              "export async function get(url: string, ms = 1000) {\n  return fetch(url, { signal: AbortSignal.timeout(ms) });\n}\n")]
    rows = []
    for index, (language, instruction, pre, post) in enumerate(edits * 2):
        digest = hashlib.sha256(f"{index}{instruction}".encode()).hexdigest()
        record = {"instruction": instruction, "pre": pre, "post": post, "language": language, "dataset": "commitpackft", "sha256": digest,
                  "tags": ["dataset:commitpackft", f"path:src/file{index}", "license:mit"]}
        row = sft_row(record, "dev" if index == 0 else "train", "MIT", PROMPT)
        rows.append({**row, "num_tokens": 0, "loss_tokens": 0})
    return rows


def test_dataset_rows_are_cached_and_masked_like_every_other_row(tmp_path, tokenizer):
    rows = dataset_rows()
    write_build(tmp_path / "lake", "b-datasets", rows)
    source = prepare_source(Lake.at(tmp_path / "lake"), "b-datasets", 1.0, tmp_path / "cache")
    assert (source.train_rows, source.dev_rows) == (5, 1)
    table = open_split(source, "train")
    encoder = ChatEncoder(tokenizer, seq_len=1024)
    examples = encoder.encode(table.column("messages").to_pylist())
    assert all(example is not None for example in examples) and encoder.turns_not_rendered == 0
    by_id = {row["example_id"]: row for row in rows}
    for example_id, example in zip(table.column("example_id").to_pylist(), examples):
        messages = by_id[example_id]["messages"]
        trained = tokenizer.decode(example.targets[example.targets != IGNORE])
        assert trained == messages[2]["content"] + tokenizer.eos_token  # the code after the change and the end of the turn, nothing else
        assert messages[2]["content"].startswith("```") and "before the change" not in trained and PROMPT not in trained
        positions = np.flatnonzero(example.targets != IGNORE)
        assert (example.targets[positions] == example.input_ids[positions + 1]).all()
    stream = PackedStream([table], [1.0], ChatEncoder(tokenizer, 256), window=4, seed=0)
    try:
        packed = stream.take(2)
    finally:
        stream.close()
    assert packed and all(len(example.input_ids) <= 256 for row in packed for example in row)


def test_the_learner_trains_on_a_build_whose_rows_are_dataset_rows(ray_cluster, tiny_model, tmp_path):
    from learner.settings import LearnerSettings
    from learner.train import launch

    rows = [row for row in dataset_rows() if row["split"] == "train"][:4] + [dataset_rows()[0]]  # 4 train rows to overfit, 1 dev row
    write_build(tmp_path / "lake", "b-datasets", rows)
    settings = LearnerSettings.model_validate({
        "model": str(tiny_model), "output_dir": str(tmp_path / "runs"), "run_name": "datasets",
        "data": {"lake": str(tmp_path / "lake"), "seq_len": 256, "window": 3},
        "optim": {"lr": 1e-2, "warmup_steps": 1, "min_lr_ratio": 0.1},
        "train": {"max_steps": 6, "micro_batch_size": 1, "gradient_accumulation_steps": 2, "loss_chunk_tokens": 50},
        "eval": {"every_steps": 3, "max_sequences": 1},
        "checkpoint": {"every_steps": 6, "keep": 1},
        "workers": {"count": 2, "device": "cpu", "cpus_per_worker": 0.05, "start_timeout_s": 120},
    })
    run = launch(settings, echo=False)
    losses = [loss for _, loss in run["loss"]]
    assert run["finished"] and len(losses) == 6 and losses[-1] < 0.8 * losses[0]
    assert len(run["eval_loss"]) == 2
