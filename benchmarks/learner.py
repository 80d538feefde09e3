"""The learner against a plain DeepSpeed ZeRO-3 loop: tokens/s and MFU on the same model and token budget.

    python -m benchmarks.learner [--device auto|gpu|cpu] [--tokens N] [--build DIR] [--workdir DIR] [--variant KEY=VALUE,...]

The model is Qwen3-shaped with random weights and Qwen's vocabulary of 151,936: on a GPU the
Qwen3-0.6B shape (28 layers, hidden 1024) at sequence 4096, on CPU a tiny one (2 layers, hidden 64)
at sequence 512. Both runs use one Ray Train worker, bf16 on GPUs (fp32 on CPU), ZeRO-3, gradient
checkpointing and the same optimizer, and train on the same rows: the recorded example sessions as
sft rows (or `--build`).

- `plain`: the loop most people write first: the Hugging Face model with SDPA, micro-batches of
  `seq` consecutive tokens of the rows laid end to end (no padding, attention across examples,
  labels = inputs), the model's own loss over the full logits (`plain_loop` below, 20 lines).
- `learner`: `learner.train.launch` on the same rows: packed examples kept apart, loss only on the
  assistant turns, the fused (Liger, when installed) or chunked linear cross-entropy that never
  holds the full logits, and a larger micro-batch that the saved memory allows.

Tokens/s counts real tokens (padding excluded) over the steps after the first two; MFU is model
FLOPs (6 x matmul parameters per token, plus causal attention over each example's own length) over
seconds x peak (`--peak-tflops`, default 989 for an H100's dense BF16 on GPUs, 0.1 per CPU worker).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.phases import Phases

GPU_SHAPE = {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128}
CPU_SHAPE = {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 16}
VOCAB = 151936
WARMUP_STEPS = 2


def make_model(workdir: Path, shape: dict[str, int]) -> Path:
    """Random Qwen3 weights with a vocabulary of 151,936 and the embedded model's tokenizer (its ids all fit)."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from trajforge.small_model import ensure_small_model

    target = workdir / f"qwen3-{shape['num_hidden_layers']}x{shape['hidden_size']}"
    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(str(ensure_small_model(workdir / "small-qwen3")))
    config = Qwen3Config(vocab_size=VOCAB, tie_word_embeddings=True, max_position_embeddings=8192, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, **shape)
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target


def make_build(lake: Path, copies: int) -> Path:
    """A curated build whose sft rows are the recorded example sessions (each `copies` times), with its manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.build.field_rows import chat
    from trajforge.contracts.curated import SFT
    from trajforge.replay import load_recorded, recorded_sessions

    folder = lake / "curated" / "bench"
    (folder / "sft").mkdir(parents=True, exist_ok=True)
    rows = []
    for copy in range(copies):
        for number, path in enumerate(recorded_sessions()):
            steps = [step for chunk in load_recorded(path)["chunks"] for step in chunk]
            messages = chat(steps, f"You are a coding agent (session {copy}).")
            session = f"{path.stem}-{copy}"
            rows.append({"example_id": f"{number:03d}-{copy:04d}", "source": "ingest", "session_id": session, "step": None,
                         "split": "dev" if copy == 0 else "train", "tier": "TIER_A", "score": 1.0, "messages": messages,
                         "num_tokens": 0, "loss_tokens": 0, "provenance": None})
    path = folder / "sft" / "part-00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SFT), path)
    entry = {"path": "sft/part-00000.parquet", "rows": len(rows), "bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps({"build_id": "bench", "rows": {"sft": len(rows)}, "files": [entry]}) + "\n")
    return folder


def plain_loop(config: dict[str, Any]) -> None:
    """The baseline, as one Ray Train worker: HF model, SDPA, gradient checkpointing, full logits."""
    if not config["on_gpu"]:
        from learner.trainer import skip_shared_memory_comm_build

        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        skip_shared_memory_comm_build()
    import deepspeed
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    from learner.model import enable_checkpointing

    deepspeed.init_distributed(dist_backend="nccl" if config["on_gpu"] else "gloo")
    keep = HfDeepSpeedConfig(config["ds_config"])  # noqa: F841 (ZeRO-3 partitions while loading while it lives)
    dtype = torch.bfloat16 if config["on_gpu"] else torch.float32
    model = AutoModelForCausalLM.from_pretrained(config["model_dir"], dtype=dtype, attn_implementation="sdpa")
    model.train()  # from_pretrained answers eval mode, where Hugging Face skips the checkpointing below
    enable_checkpointing(model, every_n_layers=1)  # HF's activation checkpointing, non-reentrant (as ZeRO-3 needs)
    optimizer = None if "optimizer" in config["ds_config"] else torch.optim.AdamW(model.parameters(), lr=1e-5)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, model_parameters=model.parameters(), config=config["ds_config"])
    tokens = torch.from_numpy(np.load(config["tokens_file"]))
    batch, seq, times = config["micro_batch"], config["seq_len"], []
    for step in range(config["steps"]):
        started = time.perf_counter()
        chunk = tokens[(step * batch * seq) % (len(tokens) - batch * seq):][: batch * seq].view(batch, seq).to(engine.device)
        loss = engine(input_ids=chunk, labels=chunk).loss
        engine.backward(loss)
        engine.step()
        loss.item()
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**30 if config["on_gpu"] else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    Path(config["result_file"]).write_text(json.dumps({"step_seconds": times, "memory_gb": peak}))


def token_stream(build: Path, model_dir: Path, seq_len: int, cache: Path) -> Path:
    """The train rows rendered with the chat template and tokenized, end to end: the plain loop's input."""
    import numpy as np
    from transformers import AutoTokenizer

    from learner.sources import open_split, prepare_source
    from trajforge.lake import Lake

    source = prepare_source(Lake.at(build.parent.parent), str(build), 1.0, cache)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    texts = [tokenizer.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in messages], tokenize=False)
             for messages in open_split(source, "train").column("messages").to_pylist()]
    ids = [token for encoded in tokenizer(texts, add_special_tokens=False)["input_ids"] for token in encoded[: seq_len * 4]]
    path = cache / "plain_tokens.npy"
    np.save(path, np.asarray(ids, dtype=np.int64))
    return path


def run_plain(args, model_dir: Path, tokens_file: Path, on_gpu: bool, workdir: Path, shape) -> dict[str, float]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from learner.engine import deepspeed_config
    from learner.settings import LearnerSettings

    settings = LearnerSettings.model_validate({"train": {"micro_batch_size": args.plain_micro_batch, "gradient_accumulation_steps": 1}})
    steps = max(WARMUP_STEPS + 2, -(-args.tokens // (args.plain_micro_batch * args.seq_len)))
    result_file = workdir / "plain.json"
    config = {"on_gpu": on_gpu, "ds_config": deepspeed_config(settings, 1, on_gpu), "model_dir": str(model_dir), "tokens_file": str(tokens_file),
              "micro_batch": args.plain_micro_batch, "seq_len": args.seq_len, "steps": steps, "result_file": str(result_file)}
    TorchTrainer(plain_loop, train_loop_config=config, torch_config=TorchConfig(backend="nccl" if on_gpu else "gloo"),
                 scaling_config=ScalingConfig(num_workers=1, use_gpu=on_gpu, resources_per_worker={"CPU": 1}),
                 run_config=RunConfig(name="plain", storage_path=str(workdir / "runs"))).fit()
    measured = json.loads(result_file.read_text())
    seconds = sum(measured["step_seconds"][WARMUP_STEPS:])
    tokens = (steps - WARMUP_STEPS) * args.plain_micro_batch * args.seq_len
    flops = shape.flops(tokens, (steps - WARMUP_STEPS) * args.plain_micro_batch * args.seq_len**2)
    return {"tokens_per_s": tokens / seconds, "mfu": flops / (seconds * args.peak_tflops * 1e12), "memory_gb": measured["memory_gb"], "steps": steps}


def run_learner(args, model_dir: Path, build: Path, on_gpu: bool, workdir: Path, name: str = "learner",
                overrides: list[tuple[str, Any]] = ()) -> dict[str, float]:
    from learner.metrics import read_metrics
    from learner.settings import LearnerSettings
    from learner.train import launch
    from trajforge.settings import set_path

    data = {
        "model": str(model_dir), "output_dir": str(workdir / "runs"), "run_name": name, "resume": "never", "peak_tflops": args.peak_tflops,
        "data": {"lake": str(build.parent.parent), "builds": [{"build": str(build)}], "seq_len": args.seq_len, "cache_dir": str(workdir / "cache")},
        "train": {"micro_batch_size": args.learner_micro_batch, "gradient_accumulation_steps": 1},
        "eval": {"every_steps": 0, "max_sequences": 1}, "checkpoint": {"every_steps": 0, "export_hf": False},
        "workers": {"count": 1, "device": "gpu" if on_gpu else "cpu", "cpus_per_worker": 1},
    }
    for dotted, value in overrides:
        set_path(data, dotted, value)
    data["train"]["max_steps"] = max(WARMUP_STEPS + 2, -(-args.tokens // (data["train"]["micro_batch_size"] * args.seq_len)))
    settings = LearnerSettings.model_validate(data)
    steps = settings.train.max_steps
    launch(settings, echo=False)
    lines = read_metrics(workdir / "runs" / name, "train")  # one line per step
    measured = [(line["tokens_seen"] - before["tokens_seen"], line) for before, line in zip(lines, lines[1:])][WARMUP_STEPS - 1 :]
    tokens = sum(count for count, _ in measured)
    seconds = sum(count / line["tokens_per_s"] for count, line in measured)
    mfu = sum(line["mfu"] * count / line["tokens_per_s"] for count, line in measured) / seconds
    return {"tokens_per_s": tokens / seconds, "mfu": mfu, "memory_gb": max(line["memory_gb"] for _, line in measured), "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["auto", "gpu", "cpu"], default="auto")
    parser.add_argument("--tokens", type=int, default=None, help="token budget of each run (default: 40 x 4 x seq on GPU, 12 x 2 x seq on CPU)")
    parser.add_argument("--seq-len", type=int, default=None, help="default 4096 on GPU, 512 on CPU")
    parser.add_argument("--plain-micro-batch", type=int, default=None, help="default 4 on GPU (the measured baseline), 2 on CPU")
    parser.add_argument("--learner-micro-batch", type=int, default=None, help="default 8 on GPU, 2 on CPU")
    parser.add_argument("--peak-tflops", type=float, default=None, help="default 989 (H100 dense BF16) on GPU, 0.1 on CPU")
    parser.add_argument("--build", type=Path, default=None, help="a curated build to train on (default: the example sessions as sft rows)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to keep the model, rows and checkpoints (default: a temporary folder, removed after)")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE...]",
                        help="also run the learner with these settings changed (dotted paths of configs/learner.yaml's "
                             "`learner:` section, e.g. train.gradient_checkpointing=false); repeatable, one row each")
    parser.add_argument("--worker-logs", action="store_true", help="print the Ray Train workers' own output here too (Ray's log_to_driver)")
    args = parser.parse_args()
    phase = Phases()

    import torch

    on_gpu = args.device == "gpu" or (args.device == "auto" and torch.cuda.is_available())
    if on_gpu:
        major, minor = torch.cuda.get_device_capability()
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")  # DeepSpeed's FusedAdam JIT
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    args.seq_len = args.seq_len or (4096 if on_gpu else 512)
    args.plain_micro_batch = args.plain_micro_batch or (4 if on_gpu else 2)
    args.learner_micro_batch = args.learner_micro_batch or (8 if on_gpu else 2)
    args.tokens = args.tokens or (40 * 4 * args.seq_len if on_gpu else 12 * 2 * args.seq_len)
    args.peak_tflops = args.peak_tflops or (989.0 if on_gpu else 0.1)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        measure(args, on_gpu, args.workdir, phase)
    else:  # its own folder (model, rows, checkpoints: about 170 MB on CPU), removed after
        with tempfile.TemporaryDirectory(prefix="bench-learner-", ignore_cleanup_errors=True) as workdir:
            measure(args, on_gpu, Path(workdir), phase)


def measure(args: argparse.Namespace, on_gpu: bool, workdir: Path, phase: Phases) -> None:
    """Runs the plain loop, the learner and its variants in `workdir`, and prints their rows and ratios."""
    import torch

    import ray

    from learner.model import ModelShape
    from trajforge.settings import parse_assignment

    shape = GPU_SHAPE if on_gpu else CPU_SHAPE
    phase("making the model and the rows")
    model_dir = make_model(workdir, shape)
    build = args.build or make_build(workdir / "lake", copies=40)
    tokens_file = token_stream(build, model_dir, args.seq_len, workdir / "cache")
    params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(str(model_dir)).parameters())
    model_shape = ModelShape(params, shape["num_hidden_layers"], shape["num_attention_heads"] * shape["head_dim"])
    ray.init(logging_level="ERROR", log_to_driver=args.worker_logs, include_dashboard=False)
    print(f"device {'gpu: ' + torch.cuda.get_device_name() if on_gpu else 'cpu'}; model {params / 1e6:.0f} M parameters "
          f"(vocabulary {VOCAB}), sequence {args.seq_len}, token budget {args.tokens}", flush=True)
    phase("plain ZeRO-3 loop: starting")
    plain = run_plain(args, model_dir, tokens_file, on_gpu, workdir, model_shape)
    phase(f"plain ZeRO-3 loop: {plain['tokens_per_s']:,.0f} tokens/s")
    runs = [("learner", "learner", [])]
    for number, variant in enumerate(args.variant, 1):
        runs.append((f"variant {number}: {variant}", f"learner-variant{number}", [parse_assignment(item) for item in variant.split(",") if item.strip()]))
    rows = [("plain", plain, args.plain_micro_batch)]
    for label, run_name, overrides in runs:
        try:  # a run that fails is reported and the next one still runs
            result = run_learner(args, model_dir, build, on_gpu, workdir, run_name, overrides)
        except Exception as exc:
            phase(f"{label}: failed: {type(exc).__name__}: {str(exc)[:2000]}")
            continue
        rows.append((label, result, dict(overrides).get("train.micro_batch_size", args.learner_micro_batch)))
        phase(f"{label}: {result['tokens_per_s']:,.0f} tokens/s")
    ray.shutdown()  # before the rows print (and a failed learner exits): its workers wrote in workdir
    width = max(len(name) for name, _, _ in rows)
    print(f"{'run':<{width}} {'micro-batch':>11} {'steps':>6} {'tokens/s':>10} {'MFU':>7} {'memory GB':>10} {'/ plain':>8}")
    for name, result, batch in rows:
        print(f"{name:<{width}} {batch:>11} {result['steps']:>6} {result['tokens_per_s']:>10,.0f} {result['mfu']:>7.2%} {result['memory_gb']:>10.1f} "
              f"{result['tokens_per_s'] / plain['tokens_per_s']:>7.2f}x")
    learner = dict((name, result) for name, result, _ in rows).get("learner")
    if learner is None:
        raise SystemExit("the learner's run failed (above)")
    print(f"learner / plain: tokens/s {learner['tokens_per_s'] / plain['tokens_per_s']:.2f}x, MFU {learner['mfu'] / plain['mfu']:.2f}x "
          f"(target on the GPU machine: tokens/s >= 1.5x)")


if __name__ == "__main__":
    main()
