"""Embedding throughput, with its baselines measured in the same run.

    python -m benchmarks.embed [--seconds 20] [--texts 2000] [--num-gpus 0]

- HTTP: `POST /v1/embed`, one 20-60-word text per request, 32 concurrent clients, through Serve's proxy
  and straight to the replica (Serve's direct ingress, as `trajforge serve --direct-ingress` runs it),
  against the raw in-process `SentenceTransformer.encode` at its best batch size. Target on the CPU
  machine: >= 0.6x.
- Pipeline: `embed_dataset` (Ray Data: tokenization on CPU workers, the model in an actor pool) over
  `--texts` texts, start to end, against one process loading the model and `encode()`-ing the same
  texts (each pays for one model load). Target on a GPU machine (`--num-gpus 1 --texts 100000`): >= 2x.
  Also printed: the pipeline against `encode()` alone, and its rate once streaming.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import time
from pathlib import Path

from benchmarks.load import run_load

VOCABULARY = (
    "refactor the handler so retries close the connection before the next attempt and log the status code then "
    "update the react component to use a memoized selector add a pytest fixture for the database session rename the "
    "spring bean and fix the failing junit test the terraform plan replaces the node group because the launch template "
    "changed the pandas join double counts orders so compare the control totals and rewrite the duckdb query"
).split()


def realistic_texts(count: int, seed: int = 7) -> list[str]:
    """Agent-log-like sentences of 20 to 60 words."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(20, 60))) for _ in range(count)]


def raw_encode(texts: list[str], model: str, batch_sizes=(16, 32, 64, 128)) -> tuple[float, int]:
    """Best sentences/s of SentenceTransformer.encode over the batch sizes, and the batch size that gave it."""
    from trajforge.embedding import Embedder

    embedder = Embedder(model=model)
    embedder.embed(texts[:64])  # warm-up
    best = (0.0, 0)
    for batch_size in batch_sizes:
        embedder.batch_size = batch_size
        started = time.perf_counter()
        embedder.embed(texts)
        rate = len(texts) / (time.perf_counter() - started)
        best = max(best, (rate, batch_size))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the HTTP measurement (default 20)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent HTTP clients (default 32)")
    parser.add_argument("--per-request", type=int, default=1, help="texts per HTTP request (OpenAI list form; default 1)")
    parser.add_argument("--texts", type=int, default=2000, help="texts for the pipeline measurement (default 2000; 100000 on a GPU)")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs for the embed replica and the pipeline's model actor")
    parser.add_argument("--model", default="packaged", help="model for every path: `packaged` (default) or a local sentence-transformers directory")
    parser.add_argument("--pipeline-only", action="store_true", help="skip the HTTP measurement (the GPU target is the pipeline's)")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE", help="embed app setting for the run, e.g. --set torch_threads=1")
    args = parser.parse_args(argv)

    import ray

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))
    from trajforge.serving import DIRECT_INGRESS_ENV

    for name, value in DIRECT_INGRESS_ENV.items():  # the replica answers on its own port too: both paths are measured
        os.environ.setdefault(name, value)
    ray.init(logging_level="ERROR", log_to_driver=False, include_dashboard=False)
    try:
        if not args.pipeline_only:
            report_http(args)
        report_pipeline(args)
    finally:
        ray.shutdown()
    return 0


def report_http(args: argparse.Namespace) -> None:
    """HTTP /v1/embed at `args.concurrency` clients, through Serve's proxy and straight to the replica (direct
    ingress), against the raw in-process encode() at its best batch size."""
    import httpx
    from ray import serve

    from serve_apps.embed.app import build_app
    from trajforge.serving import direct_endpoints
    from trajforge.settings import parse_assignment

    texts = realistic_texts(max(args.texts, 1000))
    raw_rate, best_batch = raw_encode(texts[:600], args.model)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    embed_args = {"num_gpus": args.num_gpus, "num_cpus": 0.5, "model": args.model,
                  "rate_limits": {"per_address_per_minute": 0, "per_address_per_hour": 0}, **dict(parse_assignment(text) for text in args.assignments)}
    serve.run(build_app(embed_args), name="embed", route_prefix="/v1/embed")
    paths = {"via Serve's proxy": f"http://127.0.0.1:{port}/v1/embed"}
    paths.update({"direct to the replica": f"{url}/v1/embed" for url in direct_endpoints("127.0.0.1", port).get("embed", [])[:1]})
    while not httpx.get(paths["via Serve's proxy"], timeout=10).json()["ready"]:
        time.sleep(0.5)
    groups = [texts[i : i + args.per_request] for i in range(0, len(texts) - args.per_request + 1, args.per_request)]
    bodies = [json.dumps({"input": group if args.per_request > 1 else group[0]}).encode() for group in groups] * 50
    print(f"\nembed benchmark: {args.concurrency} HTTP clients for {args.seconds:.0f} s, {args.per_request} text(s) of 20-60 words a request")
    print(f"  raw encode() best               {raw_rate:8.1f} sentences/s (batch size {best_batch})")
    for name, url in paths.items():
        run_load(url, bodies[:64], 8, 5)  # warm-up
        before = httpx.get(url, timeout=10).json()
        http = run_load(url, bodies, args.concurrency, args.seconds)
        after = httpx.get(url, timeout=10).json()
        sentences = http.per_second * args.per_request
        calls = after["batches"] - before["batches"]
        mean_batch = (after["texts_embedded"] - before["texts_embedded"]) / max(calls, 1)
        failures = {k: v for k, v in http.statuses.items() if k != 200} or "none"
        print(f"  HTTP {name:<26} {sentences:8.1f} sentences/s   {sentences / raw_rate:.2f}x raw   (target >= 0.6x; "
              f"mean model call {mean_batch:.1f} texts; non-200: {failures})")
    if len(paths) == 1:
        print("  (no direct-ingress endpoint: Ray was started without RAY_SERVE_ENABLE_DIRECT_INGRESS=1)")
    serve.shutdown()


def report_pipeline(args: argparse.Namespace) -> None:
    """`embed_dataset` over `args.texts` texts against one process's encode() of the same texts."""
    import ray

    from trajforge.embedding import Embedder, embed_dataset

    texts = realistic_texts(args.texts, seed=11)
    loading = time.perf_counter()
    single = Embedder(model=args.model, device="cuda" if args.num_gpus else "cpu")
    single.embed(texts[:256])  # warm-up
    load_s = time.perf_counter() - loading
    started = time.perf_counter()
    single.embed(texts)
    encode_s = time.perf_counter() - started
    single_rate = len(texts) / encode_s
    del single
    dataset = ray.data.from_items([{"text": text} for text in texts])
    started = time.perf_counter()
    first_out = first_rows = None
    rows = 0
    pipeline = embed_dataset(dataset, model=args.model, batch_size=256, tokenizers=2 if not args.num_gpus else 12, embedders=1,
                             num_gpus=args.num_gpus, cpus_per_worker=0.5 if not args.num_gpus else 1.0)
    for batch in pipeline.iter_batches(batch_size=None, batch_format="numpy"):
        rows += len(batch["embedding"])
        if first_out is None:
            first_out, first_rows = time.perf_counter(), rows
    finished = time.perf_counter()
    pipeline_s = finished - started
    streaming_rate = (rows - first_rows) / max(finished - first_out, 1e-9)

    # Headline: start to end, each path paying for its own model load (a fresh process or a fresh GPU actor);
    # below it, the pipeline's wall against encode() alone, and its rate once the first batch is out.
    print(f"\nembed pipeline benchmark: {len(texts)} texts of 20-60 words, {'GPU' if args.num_gpus else 'CPU'}")
    print(f"  one process: load + encode()  {load_s + encode_s:7.1f} s   {len(texts) / (load_s + encode_s):8.1f} sentences/s   "
          f"(load and warm-up {load_s:.1f} s, encode() {encode_s:.1f} s = {single_rate:.1f} sentences/s)")
    print(f"  Ray Data pipeline, start to end {pipeline_s:5.1f} s   {rows / pipeline_s:8.1f} sentences/s   "
          f"{(load_s + encode_s) / pipeline_s:.2f}x one process   (target >= 2x on a GPU machine)")
    print(f"    against encode() alone                              {encode_s / pipeline_s:.2f}x   "
          f"(the pipeline's start-up of {first_out - started:.1f} s counted, the process's load not)")
    if rows > first_rows:
        print(f"    once streaming                {streaming_rate:8.1f} sentences/s   {streaming_rate / single_rate:.2f}x encode()   (after the first batch is out)")
    else:  # nothing came after the first batch: no streaming rate to give (it printed 0.0, 0.00x)
        print(f"    once streaming                     n/a   (all {rows} texts came in the first batch; more --texts measure it)")


if __name__ == "__main__":
    raise SystemExit(main())
