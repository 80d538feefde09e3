"""Launching the learner with Ray Train: `python -m learner.train` / `trajforge train`, and `train_for_demo`.

The driver (the head node, or this machine) resolves and verifies the builds, caches their rows,
makes the embedded model if it is the one named, picks the device, writes the run's config beside
its outputs, and starts a `TorchTrainer` with one worker per GPU (`workers.count`, lowered to the GPUs
there are; `workers.count` CPU workers with gloo when there are none), pinned to the learner node by
the resources in configs/cluster.yaml. While it runs, the driver echoes rank 0's metric lines
(`<run>/metrics.jsonl`) to stdout as JSON lines.

Paths in the settings are resolved on the driver; on a cluster they must name shared storage
(the lake, `output_dir`, the model) that the learner node sees at the same path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from learner.run_failures import fit_run, resume_hint
from learner.run_lock import run_lock
from learner.settings import BuildMix, LearnerSettings, load_learner_settings
from trajforge.atomic import write_atomic
from trajforge.cluster import ClusterSettings, advertised, init_ray, load_cluster_settings
from trajforge.errors import TrajforgeError
from trajforge.placement import cpus_of_nodes_with, largest_fitting, unplaceable

log = logging.getLogger(__name__)
RAY_CHECKPOINT_RECORD = "checkpoint_manager_snapshot.json"  # Ray Train's CHECKPOINT_MANAGER_SNAPSHOT_FILENAME, in <output_dir>/<run_name>/


def resolve_model(settings: LearnerSettings, sources: list) -> Path:
    if settings.model == "small":
        from learner.sources import sample_texts
        from trajforge.small_model import ensure_small_model

        return ensure_small_model(settings.small_model_dir, texts=sample_texts(sources[0]))
    from learner.model_dir import check_model_dir

    return check_model_dir(Path(settings.model).expanduser().resolve())


def prepare(settings: LearnerSettings) -> dict[str, Any]:
    """Everything the workers need, checked before any worker starts (a bad build fails here, in seconds)."""
    from learner.checkpoint import check_resume
    from learner.device_check import check_device, device_before_ray
    from learner.resume_data import check_resume_data
    from learner.sources import prepare_source
    from trajforge.lake import Lake

    on_gpu, why = device_before_ray(settings.workers.device)
    if on_gpu is not None:  # else known once Ray is joined (`launch`)
        check_device(settings, on_gpu, why_cpu=why)
    check_resume(settings.run_dir, settings.resume)
    lake = Lake.at(settings.data.lake)
    sources = [prepare_source(lake, mix.build, mix.weight, settings.data.cache_dir, mix.where) for mix in settings.data.builds]
    # the worker count, part of the data position, is settled here unless `auto` may lower it to the GPUs there are
    check_resume_data(settings, sources, settings.workers.count if settings.workers.device != "auto" or on_gpu is False else None)
    if not any(source.dev_rows for source in sources):
        log.warning("the builds have no dev rows, so no evaluation loss will be reported: build more sessions or raise "
                    "build.sft.dev_fraction (configs/pipeline.yaml) and build again with --full")
    if settings.optim.warmup_steps >= settings.train.max_steps:
        log.warning("learner.optim.warmup_steps (%d) is not below learner.train.max_steps (%d): the learning rate only warms up, "
                    "never reaching learner.optim.lr nor its cosine decay", settings.optim.warmup_steps, settings.train.max_steps)
    # stdout carries only the metrics' JSON lines: making the model imports DeepSpeed, whose logger writes to stdout
    with contextlib.redirect_stdout(sys.stderr):
        model_dir = resolve_model(settings, sources)
    return {"sources": [source.as_dict() for source in sources], "model_dir": str(model_dir)}


def choose_workers(device: str, count: int, cluster_gpus: float, learner_gpus: int) -> tuple[bool, int, str | None]:
    """(on GPUs?, how many workers, why `count` was lowered or None): one worker per GPU.

    `auto` trains on GPUs when the Ray cluster has at least `count`; with fewer but at least one, it
    lowers the count to the GPUs there are, capped by `learner_gpus` (configs/cluster.yaml's learner
    nodes x gpus_per_node; 0 states no count and caps nothing), rather than fall back to the CPU, which
    it does only when the cluster has no GPU. `gpu` and `cpu` keep `count` as it is.
    """
    if device != "auto":
        return device == "gpu", count, None
    gpus = int(cluster_gpus)
    if gpus >= count:
        return True, count, None
    if gpus == 0:
        return False, count, None
    usable = min(gpus, learner_gpus) if learner_gpus > 0 else gpus
    cap = f", and configs/cluster.yaml gives the learner {learner_gpus}" if usable < gpus else ""
    return True, usable, (f"learner.workers.count is {count} but the Ray cluster has {gpus} GPU(s){cap}: training with {usable} "
                          f"worker(s), one per GPU (learner.workers.device=cpu trains on the CPU with {count} workers instead)")


def placement(settings: LearnerSettings, cluster: ClusterSettings) -> tuple[bool, int, dict[str, float]]:
    """(on GPUs?, how many workers, Ray resources per worker), from the settings and what the running Ray cluster offers."""
    import ray

    total = ray.cluster_resources()
    workers = settings.workers
    on_gpu, count, lowered = choose_workers(workers.device, workers.count, total.get("GPU", 0.0), cluster.learner.nodes * cluster.learner.gpus_per_node)
    if lowered:
        log.warning("%s", lowered)
    pinned = advertised({**cluster.learner.resources, **workers.resources}, total, "the learner's workers", warn=on_gpu,
                        per_node=cluster.learner.gpus_per_node or count)
    # CPU workers share the CPUs of the nodes they are pinned to, not the cluster's
    cpus = workers.cpus_per_worker or (4.0 if on_gpu else min(1.0, cpus_of_nodes_with(pinned) / (2 * count)))
    return on_gpu, count, {"CPU": cpus, **pinned}


def refuse_unplaceable(per_worker: dict[str, float], count: int, on_gpu: bool, per_node: int) -> None:
    """Refuse workers that no node can hold although the cluster's totals suffice (a learner node with fewer CPUs or
    GPUs than its pinned workers ask for, or advertising too little of the pin): Ray Train would wait for ever."""
    each = {**per_worker, **({"GPU": 1.0} if on_gpu else {})}
    problem = unplaceable(each, count, f"the learner's workers ({count})", per_node)
    if problem:
        fits = largest_fitting(each, "CPU", count)
        cpus = f"learner.workers.cpus_per_worker (--set learner.workers.cpus_per_worker={fits:g} fits) or " if fits and fits < each["CPU"] else ""
        raise TrajforgeError(f"{problem}, so Ray Train would wait for ever: lower {cpus}learner.workers.count")


def wait_for_resources(per_worker: dict[str, float], count: int, on_gpu: bool, timeout_s: float) -> None:
    """Return once `count` workers' resources are free; fail at once if the cluster could never hold them.

    Ray Train would otherwise wait for them forever, retrying silently.
    """
    import time

    import ray

    needed = {**per_worker, **({"GPU": 1.0} if on_gpu else {})}
    needed = {name: amount * count for name, amount in needed.items()}
    total = ray.cluster_resources()
    missing = {name: amount for name, amount in needed.items() if total.get(name, 0.0) + 1e-9 < amount}
    if missing:
        hint = ("it has no GPU: learner.workers.device=auto (or cpu) trains on the CPU" if not total.get("GPU") else
                "lower learner.workers.count to its GPUs (learner.workers.device=auto does)") if "GPU" in missing else \
            "lower learner.workers.count or cpus_per_worker"
        raise TrajforgeError(f"the learner's {count} workers need {needed} and the Ray cluster has only "
                             f"{ {name: total.get(name, 0.0) for name in needed} }; {hint}")
    deadline, told = time.monotonic() + timeout_s, False
    while True:
        free = ray.available_resources()
        short = {name: round(free.get(name, 0.0), 3) for name, amount in needed.items() if free.get(name, 0.0) + 1e-9 < amount}
        if not short:
            return
        if not told:  # else the command would say nothing until the timeout
            told = True
            log.warning("the learner's %d workers need %s and only %s is free: waiting up to %g s (learner.workers.start_timeout_s) for "
                        "other work to release it (`ray status` shows what holds it)%s", count, needed, short, timeout_s,
                        "; a lower learner.workers.cpus_per_worker may start now" if "CPU" in short else "")
        if time.monotonic() > deadline:
            raise TrajforgeError(f"the learner's {count} workers need {needed}; after {timeout_s:g} s only "
                                 f"{ {name: round(free.get(name, 0.0), 3) for name in needed} } is free (other jobs hold the rest)")
        time.sleep(1.0)


def _echo(path: Path, stop: threading.Event) -> None:
    """Print the lines rank 0 appends to `path` until `stop` is set (a resumed run's rewrite prints its history once)."""
    offset = path.stat().st_size if path.is_file() else 0
    while True:
        finished = stop.wait(0.5)
        if path.is_file():
            if path.stat().st_size < offset:
                offset = 0  # the run started over and rewrote the file
            with path.open("r", encoding="utf-8") as handle:
                handle.seek(offset)
                chunk = handle.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            offset += len(complete.encode("utf-8"))
            if complete:
                sys.stdout.write(complete)
                sys.stdout.flush()
        if finished:
            return


def launch(settings: LearnerSettings, cluster: ClusterSettings | None = None, *, echo: bool = True) -> dict[str, Any]:
    """Train with Ray Train (connecting to the running Ray, or starting a local one); returns the run's summary.
    A run folder another start trains in is refused before anything of it is read (`learner/run_lock.py`)."""
    settings = settings.absolute()
    with run_lock(settings.run_dir):
        return _launch(settings, cluster or load_cluster_settings(), echo=echo)


def _launch(settings: LearnerSettings, cluster: ClusterSettings, *, echo: bool) -> dict[str, Any]:
    from learner.checkpoint import complete_checkpoints
    from learner.device_check import check_device
    from learner.metrics import read_metrics
    from learner.resume_data import check_resume_data
    from learner.sources import Source

    prepared = prepare(settings)
    init_ray()
    on_gpu, count, resources = placement(settings, cluster)
    settings = settings.model_copy(update={"workers": settings.workers.model_copy(update={"count": count})})
    check_device(settings, on_gpu, why_cpu=f"learner.workers.device={settings.workers.device}" +
                 (" and the Ray cluster has no GPU" if settings.workers.device == "auto" else ""))
    check_resume_data(settings, [Source(**item) for item in prepared["sources"]], count)
    refuse_unplaceable(resources, count, on_gpu, cluster.learner.gpus_per_node or count)
    wait_for_resources(resources, count, on_gpu, settings.workers.start_timeout_s)
    peak = settings.peak_tflops or ((cluster.learner.gpu.peak_tflops if cluster.learner.gpu else None) if on_gpu else cluster.cpu_peak_tflops)
    run_dir = settings.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    forget_ray_checkpoints(run_dir)
    remove_superseded_history(settings)
    # imported after the checks: Ray Train's torch integration imports torch (seconds, a refusal need not wait for it)
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from learner.trainer import worker_main

    config = {"settings": settings.model_dump(mode="json"), "on_gpu": on_gpu, "peak_tflops": peak, **prepared}
    write_atomic(run_dir / "learner_config.json", json.dumps({**config, "resources_per_worker": resources}, indent=2) + "\n")
    trainer = TorchTrainer(
        worker_main, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=count, use_gpu=on_gpu, resources_per_worker=resources, placement_strategy="PACK"),
        torch_config=TorchConfig(backend="nccl" if on_gpu else "gloo"),
        run_config=RunConfig(name=settings.run_name, storage_path=str(settings.output_dir),
                             failure_config=FailureConfig(max_failures=settings.workers.max_failures)),
    )
    stop = threading.Event()
    echoing = threading.Thread(target=_echo, args=(run_dir / "metrics.jsonl", stop), daemon=True) if echo else None
    if echoing:
        echoing.start()
    try:
        fit_run(trainer, run_dir)
    finally:
        stop.set()
        if echoing:
            echoing.join()
    lines = read_metrics(run_dir)
    end = next((line for line in reversed(lines) if line["event"] == "end"), {})
    if end and not end.get("finished"):
        log.warning("run %s stopped at step %s of %d (learner.train.stop_after_steps), with no Hugging Face export; %s", settings.run_name,
                    end.get("step"), settings.train.max_steps, resume_hint(run_dir))
    return {
        "run_dir": str(run_dir),
        "step": end.get("step"),
        "finished": end.get("finished"),
        "loss": [(line["step"], line["loss"]) for line in lines if line["event"] == "train"],
        "eval_loss": [(line["step"], line["loss"]) for line in lines if line["event"] == "eval"],
        "tokens_per_s": [line["tokens_per_s"] for line in lines if line["event"] == "train"],
        "checkpoints": [str(path) for path in complete_checkpoints(run_dir)],
        "export": str(run_dir / "hf") if (run_dir / "hf" / "config.json").is_file() and end.get("finished") else None,
        "sources": prepared["sources"],
    }


def remove_superseded_history(settings: LearnerSettings) -> list[Path]:
    """Remove what the run's history after the step this start begins at (0 with `learner.resume=never`, a named
    checkpoint's step) left: its later checkpoints, and its Hugging Face export (`<run>/hf`) when made after that step;
    returns them. They belong to the history this start replaces (its metrics.jsonl is cut at that step too): kept,
    the checkpoints would outlive the new ones in the pruning by name, `auto` would resume from them, and until the
    new run's end a reader of `<run>/hf` would take the replaced run's model for this one's."""
    from learner import checkpoint

    if settings.resume == "auto":
        return []
    step = 0 if settings.resume == "never" else int(checkpoint.read_state(Path(settings.resume))["step"])
    superseded = checkpoint.later_than(settings.run_dir, step)
    if superseded:
        log.warning("learner.resume=%s starts run %s at step %d: removing its later checkpoints %s", settings.resume, settings.run_name,
                    step, ", ".join(path.name for path in superseded))
        checkpoint.remove(superseded)
    export = settings.run_dir / "hf"
    made_at = checkpoint.export_step(export)
    if made_at is not None and (made_at > step or made_at < 0):
        log.warning("learner.resume=%s starts run %s at step %d: removing its Hugging Face export %s (%s), the replaced history's model",
                    settings.resume, settings.run_name, step, export, f"of step {made_at}" if made_at >= 0 else "of an unknown step")
        checkpoint.remove_export(export)
        superseded.append(export)
    return superseded


def forget_ray_checkpoints(run_dir: Path) -> None:
    """Remove Ray Train's record of the run's checkpoints before a start.

    The learner resumes from its own checkpoints (`learner.resume`) and prunes them itself (`checkpoint.keep`);
    Ray Train's record still names the pruned ones, and a start that finds such a record refuses to run
    ("the run snapshot contains a reference to a checkpoint that does not exist anymore").
    """
    (run_dir / RAY_CHECKPOINT_RECORD).unlink(missing_ok=True)


def train_for_demo(build_dir: Path, steps: int, out_dir: Path, *, cpus_per_worker: float = 0.1, echo: bool = False) -> dict[str, Any]:
    """Train the embedded model `steps` steps on one build with 2 CPU workers; returns the summary (`loss` is the curve).

    Uses the running Ray if there is one (the demo's, whose Serve apps hold most CPUs: hence 0.1 CPU a worker).
    The model is `models/small-qwen3`, made on first use with a tokenizer trained on the build's text.
    """
    settings = LearnerSettings.model_validate({
        "model": "small", "output_dir": str(out_dir), "run_name": "demo", "resume": "never", "log_every_steps": 1,
        "data": {"builds": [BuildMix(build=str(build_dir)).model_dump()], "lake": str(Path(build_dir).parent.parent), "seq_len": 1024, "window": 256},
        "optim": {"lr": 1e-3, "warmup_steps": max(1, steps // 10), "min_lr_ratio": 0.1},
        "train": {"max_steps": steps, "micro_batch_size": 2, "gradient_accumulation_steps": 1, "loss_chunk_tokens": 1024},
        "eval": {"every_steps": max(1, steps // 4), "max_sequences": 8},
        "checkpoint": {"every_steps": 0, "keep": 1, "export_hf": True},
        "workers": {"count": 2, "device": "cpu", "cpus_per_worker": cpus_per_worker},
    })
    return launch(settings, echo=echo)


def curve_text(summary: dict[str, Any], width: int = 40) -> str:
    """The loss curve of a summary as text: one line per step, eval losses beside their steps."""
    losses = summary["loss"]
    if not losses:
        return "(no steps)"
    evals = dict(summary.get("eval_loss") or [])
    low, high = min(loss for _, loss in losses), max(loss for _, loss in losses)
    lines = []
    for step, loss in losses:
        bar = "#" * max(1, round(width * (loss - low) / (high - low))) if high > low else "#"
        lines.append(f"step {step:>4}  loss {loss:7.3f}  {bar}" + (f"   eval {evals[step]:.3f}" if step in evals else ""))
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from trajforge.cli.common import nonblank_path

    parser.epilog = ("A run writes <learner.output_dir>/<learner.run_name>/ (checkpoints/, metrics.jsonl, tensorboard/, and hf/, the "
                     "trained model, at the end) and prints its metrics on stdout as JSON lines, then a summary line. Starting a run "
                     "of the same name again resumes it from its last checkpoint at the same data position (learner.resume: auto, "
                     "never, or a checkpoint folder; never and a folder remove the replaced history's later checkpoints and hf/). "
                     "learner.workers.device=auto trains on the Ray cluster's GPUs, or on the CPU where it has none. Refused before "
                     "any worker starts: settings CPU workers cannot run (train.attention flash_attention_2 or flex_attention, "
                     "train.loss liger), and resuming with other data settings than the checkpoint's. A short run: "
                     "--set learner.train.max_steps=20.")
    parser.add_argument("--config", type=Path, default=None, help="learner config (default configs/learner.yaml)")
    parser.add_argument("--cluster-config", type=Path, default=None, help="cluster topology (default configs/cluster.yaml)")
    parser.add_argument("--build", default=None, help="train on this one build (a build id, `latest`, `latest:<org>`, a folder, or a published build's URI: "
                        "s3://bucket/prefix/<id> or .../latest) instead of learner.data.builds")
    parser.add_argument("--lake", type=nonblank_path, default=None, help="the lake holding the builds (learner.data.lake)")
    parser.add_argument("--estimate", action="store_true",
                        help="print DeepSpeed's memory estimate for learner.model on the GPUs its workers use and exit; needs only the "
                             "model's config.json, or a built-in shape: --set learner.model=qwen3-14b (or qwen3-0.6b; also named as on the hub, "
                             "Qwen/Qwen3-14B), and says whether it fits the GPUs of configs/cluster.yaml")


def config_roots(args: argparse.Namespace) -> tuple[str, ...]:
    """The sections `--set` may name: the learner's and the cluster topology's."""
    return ("learner", "cluster")


def absolute_learner_paths(settings: LearnerSettings) -> list[tuple[str, str]]:
    """`--set` assignments making the relative data paths absolute in the driver (`absolute_data_paths`): the Ray Train
    workers run in a folder of their own (`ray start`'s, on a cluster); in a submitted job they resolve against the
    project checkout. `learner.model` and `learner.resume` count only as folders (not `small`, `auto`, `never`)."""
    from trajforge.settings.job_paths import absolute_data_paths

    model_path = settings.small_model_dir if settings.model == "small" else (settings.model if "/" in settings.model else None)
    resume_path = settings.resume if settings.resume not in ("auto", "never") else None
    return absolute_data_paths({"learner.data.lake": settings.data.lake, "learner.output_dir": settings.output_dir,
                                "learner.data.cache_dir": settings.data.cache_dir,
                                "learner.small_model_dir" if settings.model == "small" else "learner.model": model_path,
                                "learner.resume": resume_path},
                               "--lake /shared/lake --set learner.output_dir=/shared/runs --set learner.small_model_dir=/shared/models/small-qwen3")


def run_command(args: argparse.Namespace) -> int:
    from trajforge.settings import parse_assignment

    assignments = [parse_assignment(item) for item in getattr(args, "assignments", [])]
    if args.lake is not None:
        assignments.append(("learner.data.lake", str(args.lake)))
    if args.build is not None:
        assignments.append(("learner.data.builds", [{"build": args.build, "weight": 1.0}]))
    settings = load_learner_settings(args.config, assignments)
    cluster = load_cluster_settings(args.cluster_config, assignments)
    if not args.estimate:
        settings = load_learner_settings(args.config, [*assignments, *absolute_learner_paths(settings)])
    if args.estimate:
        from learner.estimate import print_estimate

        print_estimate(settings, cluster)
        return 0
    summary = launch(settings, cluster)
    # one more JSON line, so stdout stays JSON lines throughout: the metrics lines, then this summary
    print(json.dumps({"event": "summary", **{key: value for key, value in summary.items() if key not in ("loss", "eval_loss", "tokens_per_s")}}))
    return 0


def main(argv: list[str] | None = None) -> int:
    from trajforge.cli.common import module_main

    return module_main("learner.train", "SFT with DeepSpeed ZeRO-3 on Ray Train.", add_arguments, config_roots, run_command, argv)

if __name__ == "__main__":
    sys.exit(main())
