"""`trajforge embed TEXT`: the vector's first values and the text's domain tags (checks a deployment)."""

from __future__ import annotations

import argparse
import json
import math


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the text to embed (truncated to 512 characters, as the service does)")
    parser.add_argument("--url", help="a running service, e.g. http://127.0.0.1:8000 (default: embed in this process)")
    parser.add_argument("--model", default="packaged", help="in-process model: packaged, a local directory or a cached model id")
    parser.add_argument("--domains", help="domain prototypes YAML (default configs/domains.yaml)")
    parser.add_argument("--values", type=int, default=8, help="how many leading values to print (default 8)")


def run_command(args: argparse.Namespace) -> int:
    from trajforge import embedding
    from trajforge.domains import DomainTagger, load_domains
    from trajforge.errors import TrajforgeError

    if args.url:
        embed = embedding.remote(args.url)
        source = f"{args.url}/v1/embed"
    else:
        embedder = embedding.Embedder(model=args.model)
        embed = lambda texts: embedder.embed(texts).tolist()  # noqa: E731
        source = f"in-process ({args.model})"
    try:
        vector = embed([args.text])[0]
    except RuntimeError as exc:  # the service is down or refused: say so, no traceback
        raise TrajforgeError(str(exc)) from None
    tagger = DomainTagger(load_domains(args.domains) if args.domains else None, embed=embed)
    print(f"source:  {source}")
    print(f"vector:  {len(vector)} dims, norm {math.sqrt(sum(v * v for v in vector)):.6f}")
    print(f"first:   [{', '.join(f'{v:+.5f}' for v in vector[: args.values])}, ...]")
    print(f"domains: {json.dumps(tagger.tag_vector(vector))}")
    return 0
