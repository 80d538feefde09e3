"""`trajforge <command>`; `trajforge <command> --help` explains each."""

from __future__ import annotations

import argparse
import importlib
import sys

from trajforge.cli.common import CommandParser, common_arguments, merge_assignments, run_guarded
from trajforge.cli.pipes import quiet_when_reader_leaves

# name -> (module, one-line help); a module defines `add_arguments(parser)` and `run_command(args) -> int`, and
# `config_roots(args)` if it reads configs: the sections its `--set` may name (without it, --set is refused).
# The Ray jobs' commands are their `python -m` modules (pipelines.*, actors.rollout, learner.train) themselves.
COMMANDS = {
    "serve": ("trajforge.cli.serve_cmd", "run the HTTP services (ingest, embed, the OpenAI-compatible generate front) on Ray Serve until Ctrl-C, or --detach on a running cluster"),
    "embed": ("trajforge.cli.embed_cmd", "embed a text (in-process or through a deployment) and print its domain tags"),
    "sandbox": ("trajforge.cli.sandbox_cmd", "apply an ast-grep action (and tests) to a directory in the nsjail jail; prints JSON"),
    "synth-rules": ("pipelines.synth_rules", "generate synthetic ast-grep tasks and keep those the sandbox verifies (a Ray Data job)"),
    "synth-records": ("pipelines.synth_records.cli", "schema-first synthetic records: draft a schema, generate N records (one LLM call each) on Ray workers, resume, export JSON/CSV"),
    "teacher": ("pipelines.teacher_srl", "run the teacher SRL loop on synthetic tasks and processed datasets (oracle offline, or an OpenAI-compatible teacher)"),
    "rollout": ("actors.rollout", "student rollouts: the generation actors (configs/actors.yaml) run the actor loop on tasks, a file or a Ray queue"),
    "queue": ("trajforge.cli.queue_cmd", "fill (put), inspect (status) or drop the named Ray task queue that `rollout --queue` takes from"),
    "datasets": ("pipelines.datasets.cli", "ingest public code-edit datasets (CommitPackFT, EditPackFT, ...) with hashes and licences, then split them by language (a Ray Data job)"),
    "build": ("trajforge.cli.build_cmd", "build curated Parquet from the raw lake: stitch, redact, score, embed, dedup (a Ray Data job)"),
    "lake": ("trajforge.cli.lake_cmd", "what a lake holds (info); a build published to object storage (s3://, gs://, hdfs://, file:///) for learners elsewhere; the raw lake synced there and pulled elsewhere"),
    "train": ("learner.train", "supervised fine-tuning on a build's sft rows with DeepSpeed ZeRO-3 on Ray Train (or --estimate its memory)"),
    "forget": ("trajforge.cli.forget_cmd", "a contributor's right to be forgotten: a tombstone that every later build honours"),
    "provenance": ("trajforge.cli.provenance_cmd", "which agent actions wrote a commit or a file (or --search events): asked of the ingest service with an API token, or of a build (--build)"),
    "stats": ("trajforge.cli.stats_cmd", "print what a curated build holds (tiers, models, domains, exclusions, redactions, SFT rows) as tables or JSON"),
    "dashboard": ("trajforge.cli.dashboard_cmd", "the Grafana dashboard of trajforge's metrics: print its JSON, write it (--out), or --install it into the Grafana of the Ray session on this node"),
    "demo": ("trajforge.cli.demo_cmd", "the whole factory end to end: ingest, embed, sandbox, teacher, build, train, and the trained model back in the loop"),
}


class PrintVersion(argparse.Action):
    """`--version`, asking git for the commit only when it is given (not on every command's start)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from trajforge.version import code_version

        print(f"trajforge {code_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="trajforge", description="A Ray-based training-data factory for coding agents.",
                           epilog="`trajforge COMMAND --help` explains a command, its options and their defaults.")
    parser.add_argument("--version", action=PrintVersion, help="print the version (with the checkout's git commit) and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        common_arguments(sub, command=name)
        importlib.import_module(module_name).add_arguments(sub)
        sub.set_defaults(module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; a reader that closed the pipe early (`trajforge stats | head -2`) ends it quietly with 141."""
    return quiet_when_reader_leaves(lambda: run(argv))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments; an unknown one is refused by the parser of the command (and verb) it was given to, so that the
    usage shown is that command's (`trajforge stats --bogus` showed `usage: trajforge [-h] [--version] COMMAND ...`)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        innermost = parser
        while True:
            nested = [action for action in innermost._actions if isinstance(action, argparse._SubParsersAction)]
            chosen = nested and getattr(args, nested[0].dest, None)
            if not chosen:
                break
            innermost = nested[0].choices[chosen]
        innermost.unrecognized(unknown)
    return args


def run(argv: list[str] | None = None) -> int:
    args = merge_assignments(_parse(argv))

    def load():
        module = importlib.import_module(args.module)
        return (module.config_roots(args) if hasattr(module, "config_roots") else ()), module.run_command

    name = f"trajforge {args.command}"
    return run_guarded(args, args.command, name, name, load)


if __name__ == "__main__":
    sys.exit(main())
