"""One Ray Train worker's training loop: DeepSpeed engine, packed stream, schedule, eval, checkpoints, metrics.

Each optimizer step takes `micro_batch_size x gradient_accumulation_steps x workers` packed rows
from the stream; worker r trains on its slice. Every worker knows the whole step's rows, so the
loss is normalized without communication: each micro-batch's summed loss is scaled by
(workers x accumulation) / (the step's loss tokens), which DeepSpeed's division by the accumulation
steps and averaging over workers turns into the mean over every loss token of the step.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

from learner import checkpoint
from learner.metrics import MetricsWriter, memory_gb
from learner.resume_data import data_record, data_signature
from learner.settings import LearnerSettings
from learner.sources import Source, ensure_on_this_node

log = logging.getLogger(__name__)


def worker_main(config: dict[str, Any]) -> None:
    """Ray Train's `train_loop_per_worker`; `config` is what `learner.train.launch` prepared on the driver."""
    if config["on_gpu"]:
        import torch

        # DeepSpeed JIT-compiles its fused and CPU Adam at first use; for this GPU only, not every architecture.
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "{}.{}".format(*torch.cuda.get_device_capability()))
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        skip_shared_memory_comm_build()
    # DeepSpeed calls torch.distributed's deprecated all_gather_into_tensor / reduce_scatter_tensor on every step.
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    settings = LearnerSettings.model_validate(config["settings"])
    sources = [ensure_on_this_node(Source(**item), mix.build) for item, mix in zip(config["sources"], settings.data.builds, strict=True)]
    trainer = Trainer(settings, sources, Path(config["model_dir"]), on_gpu=config["on_gpu"], peak_tflops=config["peak_tflops"])
    try:
        trainer.run()
    finally:
        trainer.close()


def skip_shared_memory_comm_build() -> None:
    """Keep DeepSpeed's CPU accelerator from JIT-compiling its shared-memory all-reduce at `init_distributed`.

    That build needs a compiler and a minute, and it waits forever on the lock file a killed build
    leaves in ~/.cache/torch_extensions; gloo's collectives are what the CPU path uses without it.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


class Trainer:
    def __init__(self, settings: LearnerSettings, sources: list[Source], model_dir: Path, *, on_gpu: bool, peak_tflops: float):
        import deepspeed
        import torch
        import torch.distributed as dist
        from transformers import AutoTokenizer

        from learner.chat import ChatEncoder
        from learner.engine import deepspeed_config, initialize
        from learner.model import load_model
        from learner.sources import open_split
        from learner.stream import Cursor, PackedStream, dev_rows

        self.settings, self.sources, self.on_gpu, self.peak_tflops = settings, sources, on_gpu, peak_tflops
        if on_gpu:
            import ray.train.torch

            torch.cuda.set_device(ray.train.torch.get_device())
        deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.run_dir = settings.run_dir
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.ds_config = deepspeed_config(settings, self.world, on_gpu)
        model, self.shape = load_model(model_dir, settings.train, self.ds_config, on_gpu)
        self.engine, self.scheduler = initialize(model, settings, self.ds_config, on_gpu)
        self.causal_lm = model.causal_lm
        self.data_record = data_record(settings, sources, self.world)
        self.signature = data_signature(self.data_record)

        seq_len = settings.data.seq_len
        self.eval_encoder = ChatEncoder(AutoTokenizer.from_pretrained(str(model_dir)), seq_len)
        dev_tables = [open_split(source, "dev") for source in sources]
        self.dev_rows = dev_rows(dev_tables, self.eval_encoder, limit=settings.eval.max_sequences, window=settings.data.window)

        self.step, self.tokens_seen, cursor = 0, 0, Cursor()
        resume_from = self._resume_point()
        if resume_from is not None:
            state = checkpoint.load(self.engine, resume_from)
            if state.get("data_signature") != self.signature:
                from trajforge.errors import TrajforgeError

                raise TrajforgeError(f"{resume_from} was written with other data settings (builds, seq_len, window, seed or batch size); "
                                     "resume with the same ones, or start a new run (learner.run_name, or learner.resume=never)")
            self.step, self.tokens_seen, cursor = state["step"], state["tokens_seen"], Cursor(**state["cursor"])
            log.info("resumed from %s at step %d", resume_from, self.step)
        self.stream = PackedStream([open_split(source, "train") for source in sources], [source.weight for source in sources],
                                   ChatEncoder(self.tokenizer, seq_len), window=settings.data.window, seed=settings.data.seed, cursor=cursor)
        self.metrics = MetricsWriter(self.run_dir, self.rank == 0, resume_step=self.step)
        self.metrics.write("start", self.step, workers=self.world, device="gpu" if on_gpu else "cpu", resumed=resume_from is not None,
                           matmul_params=self.shape.matmul_params, dev_sequences=len(self.dev_rows))

    def _resume_point(self) -> Path | None:
        import ray.train

        choice = self.settings.resume
        if ray.train.get_checkpoint() is not None:  # Ray Train restarted the workers after a failure (workers.max_failures)
            choice = "auto"  # go on from the run's last checkpoint, not from the start this run was launched with
        return checkpoint.resume_point(self.run_dir, choice)

    # -- one step -------------------------------------------------------------------------------------------
    def _tensors(self, rows) -> dict:
        import torch

        from learner.packing import layout

        arrays = layout(rows, self.settings.data.seq_len, self.pad_id)
        return {name: torch.from_numpy(array).to(self.engine.device, non_blocking=True) for name, array in arrays.items()}

    def _all_sum(self, *values: float) -> list[float]:
        import torch
        import torch.distributed as dist

        total = torch.tensor(values, dtype=torch.float64, device=self.engine.device)
        dist.all_reduce(total)
        return total.tolist()

    def train_step(self) -> dict[str, float]:
        import torch

        from learner.packing import row_stats

        train = self.settings.train
        per_worker = train.micro_batch_size * train.gradient_accumulation_steps
        rows = self.stream.take(per_worker * self.world)
        stats = row_stats(rows)
        mine = rows[self.rank * per_worker : (self.rank + 1) * per_worker]
        scale = self.world * train.gradient_accumulation_steps / max(1, stats["loss_tokens"])
        lr = self.scheduler.get_last_lr()[0]
        summed = torch.zeros((), dtype=torch.float32, device=self.engine.device)
        for micro in range(train.gradient_accumulation_steps):
            loss = self.engine(**self._tensors(mine[micro * train.micro_batch_size : (micro + 1) * train.micro_batch_size]))
            self.engine.backward(loss * scale)
            self.engine.step()
            summed += loss.detach()
        (loss_sum,) = self._all_sum(float(summed))
        grad_norm = self.engine.get_global_grad_norm()
        return {"loss": loss_sum / max(1, stats["loss_tokens"]), "lr": lr, "grad_norm": float(grad_norm) if grad_norm is not None else None,
                **stats}

    def evaluate(self) -> dict[str, float] | None:
        import torch

        if not self.dev_rows:
            return None
        batch = self.settings.train.micro_batch_size
        padded = list(self.dev_rows) + [None] * (-len(self.dev_rows) % (batch * self.world))
        mine = padded[self.rank :: self.world]
        self.engine.eval()
        loss_sum, tokens = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(mine), batch):
                chunk = mine[start : start + batch]
                loss_sum += float(self.engine(**self._tensors(chunk)))
                tokens += sum(example.loss_tokens for row in chunk for example in (row or ()))
        self.engine.train()
        loss_sum, tokens = self._all_sum(loss_sum, tokens)
        return {"loss": loss_sum / max(1.0, tokens), "loss_tokens": int(tokens), "sequences": len(self.dev_rows)}

    # -- the run --------------------------------------------------------------------------------------------
    def run(self) -> None:
        import ray.train

        settings = self.settings
        last_stop = settings.train.stop_after_steps or settings.train.max_steps
        final = min(settings.train.max_steps, last_stop)
        window = {"seconds": 0.0, "tokens": 0, "flops": 0.0}
        while self.step < final:
            started = time.perf_counter()
            result = self.train_step()
            self.step += 1
            self.tokens_seen += result["tokens"]
            window["seconds"] += time.perf_counter() - started
            window["tokens"] += result["tokens"]
            window["flops"] += self.shape.flops(result["tokens"], result["squared_lengths"])
            if self.step % settings.log_every_steps == 0 or self.step == final:
                seconds = max(window["seconds"], 1e-9)
                self.metrics.write("train", self.step, loss=result["loss"], lr=result["lr"], grad_norm=result["grad_norm"],
                                   tokens_per_s=window["tokens"] / seconds,
                                   mfu=window["flops"] / (seconds * self.world * self.peak_tflops * 1e12),
                                   memory_gb=memory_gb(self.on_gpu), loss_tokens=result["loss_tokens"], tokens_seen=self.tokens_seen)
                window = {"seconds": 0.0, "tokens": 0, "flops": 0.0}
            at_end = self.step == final
            if (settings.eval.every_steps and self.step % settings.eval.every_steps == 0) or at_end:
                evaluated = self.evaluate()
                if evaluated is not None:
                    self.metrics.write("eval", self.step, **evaluated)
            if (settings.checkpoint.every_steps and self.step % settings.checkpoint.every_steps == 0) or at_end:
                self._checkpoint()
        finished = self.step >= settings.train.max_steps
        if finished and settings.checkpoint.export_hf:
            info = {"step": self.step, "tokens_seen": self.tokens_seen, "builds": [s.build_id for s in self.sources],
                    "settings": settings.model_dump(mode="json")}
            target = checkpoint.export_hf(self.engine, self.causal_lm, self.tokenizer, self.run_dir / "hf", info)
            if target is not None:
                self.metrics.write("export", self.step, path=str(target))
        dropped = dict(self.stream.encoder.dropped)
        self.metrics.write("end", self.step, finished=finished, tokens_seen=self.tokens_seen, dropped=dropped,
                           truncated=self.stream.encoder.truncated, turns_not_rendered=self.stream.encoder.turns_not_rendered)
        ray.train.report({"step": self.step, "finished": finished})

    def _checkpoint(self) -> None:
        import ray.train
        from ray.train import Checkpoint, CheckpointUploadMode

        state = {"step": self.step, "tokens_seen": self.tokens_seen, "cursor": self.stream.cursor.as_dict(),
                 "data_signature": self.signature, "data": self.data_record, "builds": [source.build_id for source in self.sources]}
        folder = checkpoint.save(self.engine, self.run_dir, self.step, state, self.settings.checkpoint.keep)
        self.metrics.write("checkpoint", self.step, path=str(folder))
        # Written in place by every worker: Ray Train records it without copying (a 14B model's shards are ~200 GB).
        ray.train.report({"step": self.step}, checkpoint=Checkpoint.from_directory(str(folder)) if self.rank == 0 else None,
                         checkpoint_dir_name=folder.name, checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD)

    def close(self) -> None:
        if hasattr(self, "stream"):
            self.stream.close()
        if hasattr(self, "metrics"):
            self.metrics.close()
