"""Actor loop throughput against its engine alone, measured in the same run.

    python -m benchmarks.actors [--tasks 8] [--max-tokens 64] [--model small] [--engine transformers] [--num-gpus 0]

- engine alone: `engine.generate` in this process, one request after another, `--max-tokens` each;
- the loop: one GenerationActor running the actor loop (two generations per step, tag parsing,
  the jailed sandbox, state merge, fsync'd records) over `--tasks` tasks of up to 2 steps.
Prints generated tokens/s for both, steps/s and sandbox-verified steps/s of the loop. With the embedded
random-weight model no action verifies; a trained checkpoint (`--model DIR`) shows the verified rate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.phases import Phases, TaskProgress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default="small", help="`small` (the embedded model) or a local model directory")
    parser.add_argument("--engine", default="transformers", choices=["transformers", "vllm"])
    parser.add_argument("--num-gpus", type=float, default=0.0)
    parser.add_argument("--worker-logs", action="store_true", help="print the actor's own output here too (Ray's log_to_driver)")
    args = parser.parse_args(argv)
    phase = Phases()

    import ray

    from actors.actor import start_actors
    from actors.engines.factory import build_engine
    from actors.engines.types import GenerationRequest
    from actors.run import run_loop
    from actors.settings import load_actor_settings

    lake = Path(tempfile.mkdtemp(prefix="trajforge-bench-actors-"))
    settings = load_actor_settings(assignments=[
        ("actors.engine", args.engine), ("actors.model", args.model), ("actors.num_gpus", args.num_gpus), ("actors.lake", str(lake)),
        ("actors.loop.max_steps", 2), ("actors.loop.max_tokens", args.max_tokens), ("actors.loop.state_max_tokens", args.max_tokens // 2)])

    engine = build_engine(settings)
    phase(f"engine loaded: {engine.name} on {'GPU' if args.num_gpus else 'CPU'}")
    requests = [GenerationRequest(prompt=f"def handler_{i}(request):", max_tokens=args.max_tokens, temperature=0.7, seed=i) for i in range(args.tasks)]
    engine.generate(requests[:1])  # warm-up
    started = time.perf_counter()
    alone = engine.generate(requests)
    alone_tokens = sum(c.completion_tokens for c in alone)
    alone_rate = alone_tokens / (time.perf_counter() - started)
    phase(f"engine alone: {alone_tokens} tokens at {alone_rate:.1f} tokens/s")
    del engine

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))
    ray.init(logging_level="ERROR", log_to_driver=args.worker_logs, include_dashboard=False)
    try:
        (actor,) = start_actors(settings)
        phase("actor started and warmed up")
        tasks = [{"task_id": f"bench-{i}", "instruction": "Replace print calls with logging.info", "language": "python",
                  "files": {"app.py": f"import logging\n\ndef run():\n    print('step', {i})\n"}} for i in range(args.tasks)]
        before = ray.get(actor.health.remote())["generated_tokens"]
        started = time.perf_counter()
        summaries = run_loop([actor], tasks, progress=TaskProgress(phase, len(tasks), "actor loop"))
        wall = time.perf_counter() - started
        tokens = ray.get(actor.health.remote())["generated_tokens"] - before
    finally:
        ray.shutdown()
        shutil.rmtree(lake, ignore_errors=True)  # the benchmark's own lake: nothing left in /tmp
    steps = sum(s["steps"] for s in summaries)
    verified = sum(s["verified"] for s in summaries)
    loop_rate = tokens / wall
    print(f"\nactors benchmark: {args.engine} engine, model {args.model}, {args.tasks} tasks, {args.max_tokens} tokens per generation")
    print(f"  engine alone          {alone_rate:8.1f} generated tokens/s")
    print(f"  actor loop            {loop_rate:8.1f} generated tokens/s   {loop_rate / alone_rate:.2f}x the engine alone")
    print(f"                        {steps / wall:8.2f} steps/s, {verified / wall:.2f} sandbox-verified steps/s ({verified} of {steps} steps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
